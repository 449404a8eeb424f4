"""Side-by-side benchmark of the echo servers: harness, load generator, references, report.

``python -m bench --mode quick|full`` (or ``make bench`` / ``make bench-quick``)
starts every contestant as a real subprocess, drives it with the same
multiprocess blocking-socket client and writes ``reports/bench/``.
"""
