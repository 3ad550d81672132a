"""Throughput, latency and memory benchmark of the tracker against two baselines, and the
batch reference (``reference.py``) that both the benchmark and the tests check figures with.

Run it as ``retention bench`` (``cli/bench.py``); BENCHMARKS.md has the figures and how they
were measured. No module of the worker imports this package.
"""
