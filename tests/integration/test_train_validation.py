"""Validation of generators on a small pack of real faces, and its CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pifr.train.config import TrainConfig
from pifr.train.loop import Trainer


def test_validation_rank1_of_a_passthrough_generator_equals_the_raw_input(small_pack, tmp_path):
    """validate(): a generator that returns its input must score exactly like the raw input, and
    real CFP profiles must be identified among three identities better than chance."""

    cfg = TrainConfig(pack=str(small_pack), val_pack=str(small_pack), train_identities="351-351",
                      val_identities="1-3", out=str(tmp_path / "run"), width=0.125, batch=4, identity_net="mobilefacenet",
                      val_pairs=100, resume=False)

    class Passthrough(torch.nn.Module):
        noise_dim = 1

        def forward(self, x, lm, noise=None):
            return {"img128": x}

    tr = Trainer(cfg)
    tr.g = Passthrough()
    v = tr.validate()
    assert v["val_rank1_output"] == v["val_rank1_input"] and abs(v["val_id_cos_output"] - v["val_id_cos_input"]) < 1e-6
    assert v["val_rank1_input"] > 0.5  # 3 identities: chance is 1/3
    assert v["val_nearer_output"] == 0.0  # a copy is never nearer its target than itself

    # The raw inputs' and targets' embeddings are computed once and reused: a second check with
    # another generator scores the inputs identically and only the outputs change.
    class Grey(Passthrough):
        def forward(self, x, lm, noise=None):
            return {"img128": torch.zeros_like(x)}

    tr.g = Grey()
    w = tr.validate()
    assert (w["val_rank1_input"], w["val_id_cos_input"]) == (v["val_rank1_input"], v["val_id_cos_input"])
    assert w["val_id_cos_output"] < v["val_id_cos_output"] - 0.1 and w["val_l1"] != v["val_l1"]


def test_validation_cli_reproduces_the_trainers_figures_for_a_saved_generator(small_pack, tmp_path, capsys):
    """python -m pifr.train.validation on a generator file gives the trainer's own validation figures."""
    import json

    from pifr.train.validation import main as validation_main

    cfg = TrainConfig(pack=str(small_pack), val_pack=str(small_pack), train_identities="351-351",
                      val_identities="1-3", out=str(tmp_path / "run"), width=0.125, batch=4, identity_net="mobilefacenet",
                      val_pairs=12, resume=False)
    tr = Trainer(cfg)
    want = tr.validate()
    gen = tr.save_generator(tmp_path / "g.safetensors")
    assert validation_main(["--generator", str(gen), "--pack", str(small_pack), "--identities", "1-3",
                            "--identity-net", "mobilefacenet", "--pairs", "12", "--batch", "4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["pairs"] == 12
    for k in ("val_rank1_output", "val_rank1_input", "val_id_cos_output", "val_id_cos_input", "val_nearer_output", "val_l1"):
        assert abs(got[k] - want[k]) < 1e-4, k
    # A missing generator file is reported and the others are still scored.
    grid = tmp_path / "grid.png"
    assert validation_main(["--generator", str(tmp_path / "missing.safetensors"), str(gen), "--pack", str(small_pack),
                            "--identities", "1-3", "--identity-net", "mobilefacenet", "--pairs", "12", "--json",
                            "--grid", str(grid), "--grid-rows", "3"]) == 2
    out = capsys.readouterr()
    assert "WeightsNotFoundError" in out.err and len(out.out.strip().splitlines()) == 1
    # The grid: input | the file's output | target for pairs spread over the scored ones, as the
    # trainer draws its own samples from its live generator.
    import numpy as np
    from PIL import Image

    from pifr.train.validation import comparison_grid

    img = np.asarray(Image.open(grid))
    assert img.shape == (3 * 128, 3 * 128, 3) and "pairs [0, 6, 11]" in out.err
    tr.g.eval()
    want_img = comparison_grid(tr.val, [0, 6, 11], [tr._generate], tr.device)
    assert np.abs(img.astype(int) - want_img.astype(int)).max() <= 1
    # --paired: each later file's outputs against the first's, pair by pair (one file twice: no change).
    assert validation_main(["--generator", str(gen), str(gen), "--pack", str(small_pack), "--identities", "1-3",
                            "--identity-net", "mobilefacenet", "--pairs", "12", "--json", "--paired"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 3 and lines[-1] == {"paired": str(gen), "against": str(gen), "gained": 0, "lost": 0, "p_value": 1.0}


def test_validation_cli_through_random_views_is_seeded_and_still_recognises_raw_faces(small_pack, tmp_path, capsys):
    """--view-jitter: every image seen through its own seeded random view; the same call gives the
    same figures, the raw profiles' cosines move off the fixed view's, real faces are still
    recognised above chance (3 identities), and a file's figures do not depend on its place."""
    from pifr.train.validation import main as validation_main

    cfg = TrainConfig(pack=str(small_pack), train_identities="351-351", out=str(tmp_path / "run"), width=0.125,
                      identity_net="none", resume=False)
    gen = Trainer(cfg).save_generator(tmp_path / "g.safetensors")
    args = ["--generator", str(gen), "--pack", str(small_pack), "--identities", "1-3", "--identity-net", "mobilefacenet",
            "--pairs", "12", "--batch", "4", "--json"]
    runs = []
    for extra in ([], ["--view-jitter", "1"], ["--view-jitter", "1"]):
        assert validation_main(args + extra) == 0
        runs.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    fixed, a, b = runs
    assert a == b and a["view_jitter"] == 1.0 and fixed["view_jitter"] == 0.0
    assert abs(a["val_id_cos_input"] - fixed["val_id_cos_input"]) > 1e-4
    assert a["val_rank1_input"] > 0.5
    # Every file's outputs are seen through the same views, wherever it stands in the list.
    assert validation_main(args[:1] + [str(gen)] + args[1:] + ["--view-jitter", "1"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()] == [a, a]
    with pytest.raises(SystemExit):
        validation_main(args + ["--view-jitter", "-1"])
