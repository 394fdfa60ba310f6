"""Fixtures for the research scripts' tests (run with ``python -m pytest -q research/tests``; not
part of the default test run). Real faces come from ``../shared`` or ``$PIFR_SHARED``."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # on sys.path through pytest.ini's pythonpath: research.*, benchmarks.*

# The shared-data fixtures are the integration tier's (shared, cfp, lfw, model3d): one definition.
from tests.integration.conftest import cfp, lfw, model3d, shared  # noqa: E402,F401


@pytest.fixture(scope="module")
def small_pack(cfp, tmp_path_factory) -> Path:
    from pifr.train.data import build_pack, cfp_items

    pack = build_pack(cfp_items(cfp, range(1, 4)) + cfp_items(cfp, range(351, 352)), {"source": "CFP 001-003 + 351"}, progress=False)
    p = tmp_path_factory.mktemp("pack") / "cfp_small.npz"
    pack.save(p)
    return p
