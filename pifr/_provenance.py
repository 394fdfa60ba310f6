"""Which source produced a run: recorded in training runs' ``run.json`` and benchmark records."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)


def _git(*args: str) -> str:
    r = subprocess.run(["git", "-C", _HERE, *args], capture_output=True, text=True, timeout=10)
    return r.stdout.strip() if r.returncode == 0 else ""


def source_commit(short: bool = False) -> str:
    """``$PIFR_COMMIT`` where set (a tree copied to a GPU machine may carry a stale ``.git`` or
    none), else the checkout's commit (abbreviated with ``short``) with "-dirty" when tracked
    files differ from it, else "unknown" (an installed package outside any checkout)."""
    if os.environ.get("PIFR_COMMIT"):
        return os.environ["PIFR_COMMIT"]
    try:
        top = _git("rev-parse", "--show-toplevel")
        # An installed copy inside someone else's repository (a venv in a project) is not a checkout.
        if not top or (Path(top) / "pifr" / "_provenance.py").resolve() != Path(__file__).resolve():
            return "unknown"
        head = _git("rev-parse", *(["--short"] if short else []), "HEAD")
        if not head:
            return "unknown"
        return head + ("-dirty" if _git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
