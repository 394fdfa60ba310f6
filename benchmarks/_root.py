"""Imported first by a benchmark run as a script (``python benchmarks/cfp.py``): puts the
repository root on ``sys.path`` so that ``benchmarks.*`` (and an uninstalled ``pifr``) import the
same way as when research imports them (``python -m research.<name>`` from the root)."""
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
