"""The benchmarks' shared plumbing (run records, the embedding cache) and benchmarks/frontalization.py's scoring."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

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


def test_embedding_cache_is_per_image(cfp, tmp_path, monkeypatch):
    """benchmarks/_harness.embed_paths: a later run over a different set of files embeds only the
    files it has not seen (the cache is per image, not per batch), returns the same vectors for
    the rest, and re-embeds a file whose contents changed."""
    import shutil

    import _harness

    monkeypatch.setenv("PIFR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    src = cfp / "Data" / "Images" / "351"
    files = []
    for k, rel in enumerate(["frontal/01.jpg", "frontal/02.jpg", "profile/01.jpg"]):
        files.append(tmp_path / f"{k}.jpg")
        shutil.copy(src / rel, files[-1])
    (tmp_path / "noface.jpg").write_bytes(b"not an image")
    embedded = []  # every path the harness actually detects and embeds
    real = _harness._embed_chunk

    def counting(paths, *args):
        embedded.extend(paths)
        return real(paths, *args)

    monkeypatch.setattr(_harness, "_embed_chunk", counting)

    first = _harness.embed_paths(files[:2] + [tmp_path / "noface.jpg"], "mobilefacenet", "retinaface")
    assert len(embedded) == 3 and first[str(tmp_path / "noface.jpg")] is None
    assert float(first[str(files[0])] @ first[str(files[1])]) > 0.4  # same person, both frontal
    embedded.clear()
    second, yaws = _harness.embed_paths(files + [tmp_path / "noface.jpg"], "mobilefacenet", "retinaface",
                                        with_yaw=True)
    assert embedded == [str(files[2])]
    for f in files[:2]:
        np.testing.assert_array_equal(second[str(f)], first[str(f)])
    assert abs(yaws[str(files[2])]) > 45 and abs(yaws[str(files[0])]) < 30
    embedded.clear()
    shutil.copy(src / "frontal/03.jpg", files[0])
    os.utime(files[0], (1e9, 1e9))
    third = _harness.embed_paths(files, "mobilefacenet", "retinaface")
    assert embedded == [str(files[0])] and not np.array_equal(third[str(files[0])], first[str(files[0])])
