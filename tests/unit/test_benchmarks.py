"""The benchmarks' shared plumbing (run records) and benchmarks/frontalization.py's scoring."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np




def test_probe_without_embedding_is_a_miss_not_the_first_gallery_identity():
    from benchmarks.frontalization import cfp_hits, gallery_and_probes

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
    from benchmarks._harness import git_commit

    monkeypatch.delenv("PIFR_COMMIT", raising=False)
    own = git_commit()
    assert own == "unknown" or len(own.split("-")[0]) >= 7
    monkeypatch.setenv("PIFR_COMMIT", "9b92646")
    assert git_commit() == "9b92646"


def test_result_tables_are_written_as_csv_and_markdown(tmp_path, capsys):
    """write_table: the CSV keeps every digit, the Markdown (printed and written) rounds per
    column, and a missing value is a blank cell, never "nan"."""
    import pandas as pd

    from benchmarks._harness import write_table

    rows = [{"embedder": "a", "acc %": 98.7654, "p": 0.012345, "n": 3}, {"embedder": "b", "acc %": 50.0, "p": None, "n": 10}]
    df = write_table(rows, tmp_path, "t", "A title", {"p": ".3f"})
    back = pd.read_csv(tmp_path / "t.csv")
    assert back["acc %"].tolist() == [98.7654, 50.0] and back["p"].isna().tolist() == [False, True]
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("A title\n\n|") and md == "A title\n\n" + capsys.readouterr().out.split("A title\n\n", 1)[1]
    lines = md.strip().splitlines()[2:]
    assert len(lines) == 4 and "98.8" in lines[2] and "0.012" in lines[2] and "0.0123" not in lines[2]
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells == ["b", "50.0", "", "10"] and "nan" not in md
    assert list(df.columns) == ["embedder", "acc %", "p", "n"]
    piped = write_table([{"|yaw| bin": "0-30", "n": 1}], tmp_path, "u").to_csv(index=False)
    assert piped.startswith("|yaw| bin,n") and "\\|yaw\\| bin" in (tmp_path / "u.md").read_text()


def test_cfp_and_rotation_tables_hold_the_records_figures():
    """The benchmarks' tables are built from their run records' figures (rates in %), with
    blanks where a figure does not apply (raw has no McNemar against itself; a pair subset no rank-1)."""
    from benchmarks import cfp
    from benchmarks import rotation

    fig = {"accuracy": 0.9, "accuracy_std": 0.01, "eer": 0.1, "auc": 0.95, "tar_at_far_1e-2": 0.5}
    t = cfp.summary_table({"e1": {"FF": fig, "FP": fig, "rank1_profile_to_frontal": 0.75, "rank1_probes": 200},
                           "e2": {"FF": fig, "FP": fig}})
    assert t["CFP-FP acc %"].tolist() == [90.0, 90.0] and t["FP AUC"].tolist() == [0.95, 0.95]
    assert t["rank-1 profile→frontal %"].iloc[0] == 75.0 and t["rank-1 profile→frontal %"].isna().iloc[1]
    assert t["rank-1 probes"].iloc[0] == 200 and t["rank-1 probes"].isna().iloc[1]
    v = {"rank1": 0.8, "fp_accuracy": 0.85, "fp_eer": 0.15, "fp_tar_at_far_1e-2": 0.4, "ff_accuracy": 0.99}
    r = rotation.cfp_table({"e1": {"raw": {**v, "far_tar_at_default": (0.01, 0.7)},
                                   "rule": {**v, "rank1": 0.9, "mcnemar": {"gained": 7, "lost": 2, "p_value": 0.18},
                                            "far_tar_at_default": (0.02, 0.8)}}})
    assert r["method"].tolist() == ["raw", "rule"] and r["rank-1 %"].tolist() == [80.0, 90.0]
    assert r["gained"].isna().iloc[0] and (r["gained"].iloc[1], r["lost"].iloc[1], r["p"].iloc[1]) == (7, 2, 0.18)
    assert r["FAR at threshold %"].tolist() == [1.0, 2.0] and r["TAR at threshold %"].tolist() == [70.0, 80.0]
    bins = rotation.yaw_bin_table({"e1": {"raw": {"0-55": (0.5, 10), "55-70": (0.25, 4)}}})
    assert bins.iloc[0].to_dict() == {"embedder": "e1", "method": "raw", "0-55° %": 50.0, "0-55° n": 10,
                                      "55-70° %": 25.0, "55-70° n": 4}
