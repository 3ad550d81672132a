"""The native engine's build (issue 29): Cython compiles streams/_native.pyx (the plan's
delta core) and streams/_codec.pyx (the user record codec) with the machine's C compiler
when the project is pip-installed (pyproject.toml's build-system brings setuptools and
Cython). ``optional``: without a compiler the install still succeeds and the worker runs
the pure-Python engine, and says so (streams/engine.py); CI, which has gcc, fails if either
module was not built (tests/streams/test_engine.py)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize(
    [Extension(f"retention_tracker.streams.{name}", [f"streams/{name}.pyx"],
               extra_compile_args=["-O2"], optional=True)
     for name in ("_native", "_codec")],
    compiler_directives={"language_level": "3"},
))
