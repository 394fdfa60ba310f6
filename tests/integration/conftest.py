"""The integration tier: real faces from the shared data root (``$PIFR_SHARED`` or ``../shared``);
every test here skips, with the reason, where that folder is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

from pifr.eval.datasets import shared_root


@pytest.fixture(scope="session")
def shared() -> Path:
    root = shared_root()
    if not (root / "data").is_dir():
        pytest.skip(f"shared data not found at {root} (set PIFR_SHARED)")
    return root


@pytest.fixture(scope="session")
def model3d(shared) -> str:
    """The Hassner reference head (academic licence, user-supplied), or a skip."""
    p = shared / "models" / "face-frontalization" / "model3Ddlib.mat"
    if not p.is_file():
        pytest.skip("model3Ddlib.mat (academic licence) not available")
    return str(p)


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


@pytest.fixture(scope="session")
def small_pack(cfp, tmp_path_factory) -> Path:
    """A pack of CFP identities 001–003 (training) and 351 (validation), built once per run."""
    from pifr.train.data import build_pack, cfp_items

    pack = build_pack(cfp_items(cfp, range(1, 4)) + cfp_items(cfp, range(351, 352)), {"source": "CFP 001-003 + 351"}, progress=False)
    p = tmp_path_factory.mktemp("pack") / "cfp_small.npz"
    pack.save(p)
    return p
