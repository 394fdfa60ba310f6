"""Fixtures for the research scripts' tests (run with ``python -m pytest -q research/tests``; not
part of the default test run). Real faces come from ``../shared`` or ``$PIFR_SHARED``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "benchmarks", ROOT / "research"):  # the scripts import the benchmarks' harness
    sys.path.insert(0, str(p))

from pifr.eval.datasets import shared_root  # noqa: E402


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"shared data not found at {root} (set PIFR_SHARED)")
    return root


@pytest.fixture(scope="session")
def cfp(shared) -> Path:
    return shared / "data" / "cfp"


@pytest.fixture(scope="module")
def small_pack(cfp, tmp_path_factory) -> Path:
    from pifr.train.data import build_pack, cfp_items

    pack = build_pack(cfp_items(cfp, range(1, 4)) + cfp_items(cfp, range(351, 352)), {"source": "CFP 001-003 + 351"}, progress=False)
    p = tmp_path_factory.mktemp("pack") / "cfp_small.npz"
    pack.save(p)
    return p
