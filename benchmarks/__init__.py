"""pifr's benchmarks: every published figure, each script printing how it was run.

Run a benchmark as a file from anywhere (``python benchmarks/cfp.py``); research imports their
shared parts as this package (``from benchmarks._harness import embed_paths``, run as
``python -m research.<name>`` from the repository root). A benchmark imports its siblings as
``benchmarks.<name>`` too; run as a script it first imports ``_root``, which puts the repository
root on ``sys.path`` — the one place a path is edited.
"""
