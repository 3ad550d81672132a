"""Throughput, latency and memory benchmark of the tracker against two baselines (issue 6).

Run it as ``retention bench`` (see ``agents/bench_cli.py``); BENCHMARKS.md has the figures
and how they were measured. Not part of the installed package: it lives next to the code
it measures and is loaded from the source checkout.
"""
