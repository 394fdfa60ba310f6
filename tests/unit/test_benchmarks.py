"""The benchmarks' shared plumbing (run records) and benchmarks/frontalization.py's scoring."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np

from tests.conftest import ROOT


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
