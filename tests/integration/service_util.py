"""Real ``python -m pifr serve`` processes on a free loopback port, for the service's integration tests."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from benchmarks.service import Server as BenchServer
from benchmarks.service import free_port  # noqa: F401 - the tests take ports from it too


ADMIN, RECO = "admin-integration-key-0001", "recognize-integration-key-0001"
KEYS = f"admin:{ADMIN},door=recognize:{RECO}"


def lfw_people(lfw: Path, n: int, photos: int = 1) -> List[List[Path]]:
    """The first ``n`` LFW people (alphabetical) with at least ``photos`` photos: their first ``photos``."""
    out = []
    for d in sorted(p for p in lfw.iterdir() if p.is_dir()):
        fs = sorted(d.glob("*.jpg"))
        if len(fs) >= photos:
            out.append(fs[:photos])
            if len(out) == n:
                break
    return out


class Server(BenchServer):
    """One server process for a test: its log and audit log in ``tmp`` under ``name``, one torch
    thread, ``keys`` as ``PIFR_API_KEYS`` (``None``: none)."""

    def __init__(self, gallery: str, tmp: Path, *args: str, name: str = "server", keys: Optional[str] = KEYS,
                 timeout: float = 180.0) -> None:
        super().__init__(gallery, tmp / f"{name}.log", *args, keys=keys, env={"OMP_NUM_THREADS": "1"}, timeout=timeout)
