"""``python -m retention_tracker.agents`` is the ``retention`` command (tests use it)."""

from .cli import main

main()
