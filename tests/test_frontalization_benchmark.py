"""benchmarks/frontalization.py's scoring: a profile with no face found must count as a miss."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))


def test_probe_without_embedding_is_a_miss_not_the_first_gallery_identity():
    from frontalization import cfp_hits, gallery_and_probes

    e = {"g1": np.array([1.0, 0.0]), "g2": np.array([0.0, 1.0]), "p1": np.array([0.9, 0.1]),
         "p2": None, "p3": np.array([0.2, 0.8]), "g3": None}
    im = lambda path, identity: SimpleNamespace(path=path, identity=identity)  # noqa: E731
    gallery = [im("g1", 1), im("g2", 2), im("g3", 3)]
    probes = [im("p1", 1), im("p2", 1), im("p3", 1)]  # p2: no face; a zero row's argmax is gallery entry 1
    G, gids, P, found = gallery_and_probes(e.get, gallery, probes)
    assert gids == [1, 2] and G.shape == (2, 2) and found.tolist() == [True, False, True]
    assert cfp_hits(e.get, gallery, probes).tolist() == [True, False, False]


def test_run_records_name_the_commit_given_by_a_copied_tree(monkeypatch):
    """A tree copied to the GPU machine carries a stale .git (or none): PIFR_COMMIT, when set, is
    the commit that benchmark records name; otherwise the checkout's own."""
    from _harness import git_commit

    monkeypatch.delenv("PIFR_COMMIT", raising=False)
    own = git_commit()
    assert own == "unknown" or len(own.split("-")[0]) >= 7
    monkeypatch.setenv("PIFR_COMMIT", "9b92646")
    assert git_commit() == "9b92646"


def test_pose_residual_starts_as_raw_and_learns_a_pose_offset():
    """scripts/embedding_residual.py's map: exactly the raw embedding before training (its epoch 0
    is raw), and on synthetic embeddings where turning a face adds a fixed offset it learns to
    take the offset back off profiles while leaving frontals near where they were."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT / "scripts"))
    from embedding_residual import PoseResidual

    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(40, 16, generator=g), dim=1)
    offset = F.normalize(torch.randn(16, generator=g), dim=0)
    ids = torch.arange(40).repeat_interleave(10)
    yaw = torch.where(torch.arange(400) % 2 == 0, torch.tensor(0.0), torch.tensor(75.0))
    e = F.normalize(centres[ids] + 0.05 * torch.randn(400, 16, generator=g) + 1.2 * (yaw > 0).float()[:, None] * offset, dim=1)
    m = PoseResidual(16, 32)
    with torch.no_grad():
        assert torch.allclose(m(e, yaw), e, atol=1e-6)
    prof = yaw > 0
    before = float((e[prof] * centres[ids[prof]]).sum(1).mean())
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(300):
        loss = F.cross_entropy(m(e, yaw) @ centres.T / 0.05, ids)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = m(e, yaw)
    after = float((out[prof] * centres[ids[prof]]).sum(1).mean())
    assert after > before + 0.2, (before, after)
    assert float((out[~prof] * centres[ids[~prof]]).sum(1).mean()) > 0.9
