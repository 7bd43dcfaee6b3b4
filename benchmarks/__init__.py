"""Ratio benchmarks of initserve against torch, numpy and nginx (issue 6); never part of `make test`.

``python -m benchmarks`` runs every comparison side by side in one process run and writes
docs/benchmarks.md; ``python -m benchmarks.engine`` runs the engine rows alone.
"""
