"""``python -m retention_tracker.cli`` is the ``retention`` command (tests use it)."""

from retention_tracker.cli.main import main

main()
