"""Shared fixtures: the real data under the shared root (``$PIFR_SHARED`` or ../shared)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pifr.eval.datasets import shared_root  # noqa: E402

EXAMPLES = ROOT / "examples" / "images"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, skipped unless asked for (-m slow or PIFR_SLOW=1)")


def pytest_collection_modifyitems(config, items):
    """Keep the default run (the README's command, CI) short: slow tests run only when a marker
    expression is given (``-m slow``) or ``PIFR_SLOW=1`` is set."""
    if config.getoption("markexpr") or os.environ.get("PIFR_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or PIFR_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"shared data not found at {root} (set PIFR_SHARED)")
    return root


@pytest.fixture(scope="session")
def lfw(shared) -> Path:
    return shared / "data" / "lfw"


@pytest.fixture(scope="session")
def cfp(shared) -> Path:
    return shared / "data" / "cfp"


@pytest.fixture(scope="session")
def cmu(shared, tmp_path_factory) -> Path:
    import tarfile

    out = tmp_path_factory.mktemp("cmu")
    with tarfile.open(shared / "data" / "cmu_faces" / "cmu_faces_full_and_half.tar.gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith("_open.pgm")]
        tar.extractall(out, members=members, filter="data")
    return out / "faces"
