"""Which implementation of the hot path this process runs: the native one (Cython,
``streams/_native.pyx`` for the plan's delta core and ``streams/_codec.pyx`` for the user
record codec, compiled when the project is pip-installed on a machine with a C compiler) or
the pure-Python fallback (``streams/plan.py``, ``streams/user_state.py``).

The one place that imports the native modules: both or neither run (one missing makes the
native engine "not built"). Both engines give exactly the same plan and the same bytes
(tests/streams run every plan property against each, and hold the codecs to each other);
the native one is faster. Chosen once per process at start (``ENGINE=auto|native|python``,
config/settings.py), like the collector tuning: a worker, ``retention check`` and the
benchmark say which one ran, so a figure measured on the fallback is never taken for the
worker's.
"""

from __future__ import annotations

from types import ModuleType
from typing import Protocol

from retention_tracker.streams import user_state
from retention_tracker.streams.user_state import UserState

ENGINES = ("auto", "native", "python")
NATIVE, PYTHON = "native", "python"


class Codec(Protocol):
    """The user record codec: ``streams/user_state.py``'s functions or the native ones
    (``streams/_codec.pyx``), byte for byte the same."""

    def encode_user(self, state: UserState, /) -> bytes: ...

    def decode_user(self, data: bytes, /) -> UserState: ...


_built: ModuleType | None
_built_codec: Codec | None
_why_not = ""
try:
    from retention_tracker.streams import _codec as _built_codec
    from retention_tracker.streams import _native as _built
except ImportError as exc:  # no compiler when the project was installed, or a stale build
    _built, _built_codec, _why_not = None, None, str(exc)

_running: ModuleType | None = _built  # auto: native when built
_running_codec: Codec = _built_codec or user_state


class EngineError(ValueError):
    """ENGINE=native where the native modules were not built: one readable line."""


def native_built() -> bool:
    """Were the native modules compiled and importable here?"""
    return _built is not None


def why_not_built() -> str:
    """Why the native modules cannot be imported ('' when they can)."""
    return _why_not


def resolve(choice: str) -> ModuleType | None:
    """The module ``choice`` (auto, native or python) would run (None: the Python engine),
    without selecting it; ``native`` where it was not built raises EngineError."""
    if choice not in ENGINES:
        raise EngineError(f"ENGINE={choice!r}: expected one of {', '.join(ENGINES)}")
    if choice == NATIVE and _built is None:
        raise EngineError(
            f"ENGINE=native but the native engine was not built ({_why_not}); reinstall "
            "the project with a C compiler (scripts/setup), or set ENGINE=auto")
    return None if choice == PYTHON else _built


def select(choice: str) -> str:
    """Run ``choice`` from now on in this process (``resolve``); returns the engine's name."""
    global _running, _running_codec
    _running = resolve(choice)
    _running_codec = (_built_codec if _running is not None else None) or user_state
    return running()


def running() -> str:
    """The engine this process runs now: 'native' or 'python'."""
    return NATIVE if _running is not None else PYTHON


def native() -> ModuleType | None:
    """The native module when it runs (None: the Python fallback runs)."""
    return _running


def codec() -> Codec:
    """The user record codec of the engine that runs: every caller encodes and decodes
    through it (``codec().encode_user(state)``), never a module of its own choosing."""
    return _running_codec


def describe(choice: str | None = None) -> str:
    """One line for logs, ``retention check`` and the benchmark's table: the engine that
    runs, or that ``choice`` would run."""
    module = _running if choice is None else resolve(choice)
    if module is not None:
        return "native (Cython: streams/_native.pyx, the deltas; streams/_codec.pyx, the codec)"
    if _built is None:
        return f"python (fallback: the native modules are not built: {_why_not})"
    return "python (ENGINE=python; the native module is built)"
