"""pifr.train.refine: the render refiner's trainer on real rotate-and-render pairs of the example faces."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def pack():
    from pifr.train.render_pairs import build

    srcs = [(EXAMPLES / n, n) for n in ("mitchell_frontal.png", "night_turned.png", "night_frontal.png")]
    return build(srcs, rotations=2, seed=3)


def _cfg(**kw):
    from pifr.train.refine import RefineConfig

    base = dict(width=0.0625, batch=2, feat=0.0, id_cos=0.0, val_pairs=0, val_every=10**6, log_every=1,
                save_every_s=1e9, lr_g=1e-3)
    return RefineConfig(**{**base, **kw})


def test_flip_table_is_a_mirror_of_the_68_points():
    from pifr.train.refine import FLIP_68

    assert sorted(FLIP_68) == list(range(68)) and (FLIP_68[FLIP_68] == np.arange(68)).all()
    assert FLIP_68[36] == 45 and FLIP_68[48] == 54 and FLIP_68[30] == 30 and FLIP_68[0] == 16


def test_flipped_pair_is_the_mirror_image(pack):
    from pifr.train.refine import RefinePairs

    pairs = RefinePairs([pack], "train") if len(RefinePairs([pack], "train")) else RefinePairs([pack], "val")
    a, b = pairs.batch([0], [False]), pairs.batch([0], [True])
    assert torch.equal(a["render"].flip(3), b["render"]) and torch.equal(a["mask"].flip(3), b["mask"])
    # The left eye of the flipped face sits where the right eye of the original was, mirrored.
    la, lb = a["landmarks"][0], b["landmarks"][0]
    assert torch.allclose(lb[36:42].mean(0), torch.tensor([128.0, 0.0]) + la[42:48].mean(0) * torch.tensor([-1.0, 1.0]))


def test_split_holds_out_whole_people():
    from pifr.train.refine import is_validation, person

    assert person("Data/Images/007/profile/02.jpg") == "cfp:007" == person("Data/Images/007/frontal/01.jpg")
    assert person("George_W_Bush/George_W_Bush_0001.jpg") == "George_W_Bush"
    names = [f"person_{i}" for i in range(2000)]
    share = np.mean([is_validation(n) for n in names])
    assert 0.03 < share < 0.08


def test_a_tiny_batch_overfits(pack, tmp_path):
    """Two real pairs, 60 steps: the pixel loss falls well below where it started (the render itself)."""
    from pifr.train.refine import RefineTrainer

    torch.manual_seed(0)
    tr = RefineTrainer(_cfg(adv=0.0, flip=False), tmp_path, packs=[pack])
    tr.train.index = tr.train.index[:2] if len(tr.train) >= 2 else (tr.train.index + tr.val.index)[:2]
    first = [tr.train_step()["pixel"] for _ in range(3)]
    for _ in range(57):
        last = tr.train_step()["pixel"]
    assert last < 0.6 * np.mean(first), (first, last)


def test_resume_continues_where_the_run_stopped(pack, tmp_path):
    """2 + 2 steps with a save and a fresh trainer in between give the weights of 4 unbroken steps."""
    from pifr.train.refine import RefineTrainer

    torch.set_num_threads(1)
    cfg = _cfg(adv=0.1)
    a = RefineTrainer(cfg, tmp_path / "a", packs=[pack])
    a.run(steps=4)
    b = RefineTrainer(cfg, tmp_path / "b", packs=[pack])
    b.run(steps=2)
    b2 = RefineTrainer(cfg, tmp_path / "b", packs=[pack])
    assert b2.step == 2
    b2.run(steps=4)
    for (k, va), vb in zip(a.G.state_dict().items(), b2.G.state_dict().values()):
        assert torch.allclose(va.float(), vb.float(), atol=1e-5), k
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "pixel" in r] == [1, 2, 3, 4]
    assert (tmp_path / "b" / "refiner.safetensors").is_file()


def test_resume_refuses_another_architecture(pack, tmp_path):
    from pifr.errors import TrainingError
    from pifr.train.refine import RefineTrainer

    RefineTrainer(_cfg(adv=0.0), tmp_path, packs=[pack]).run(steps=1)
    with pytest.raises(TrainingError, match="arch"):
        RefineTrainer(_cfg(adv=0.0, arch="spade"), tmp_path, packs=[pack])


def test_init_starts_from_a_weights_file_and_refuses_another_config(pack, tmp_path):
    """``init``: a fine-tune starts from the given refiner's weights, not from scratch; a file of
    another width is refused."""
    from pifr.errors import TrainingError
    from pifr.models.refiner import Refiner, save_refiner
    from pifr.train.refine import RefineTrainer

    torch.manual_seed(5)
    src = Refiner(_cfg().refiner_config())
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))  # the zero-initialised last conv too
    save_refiner(src, tmp_path / "src.safetensors", {})
    tr = RefineTrainer(_cfg(adv=0.0, init=str(tmp_path / "src.safetensors")), tmp_path / "run", packs=[pack])
    for (k, va), vb in zip(src.state_dict().items(), tr.G.state_dict().values()):
        if va.is_floating_point():
            assert torch.allclose(va.half().float(), vb), k  # saved as fp16
    with pytest.raises(TrainingError, match="width"):
        RefineTrainer(_cfg(adv=0.0, width=0.125, init=str(tmp_path / "src.safetensors")), tmp_path / "run2", packs=[pack])


def test_validation_reference_is_computed_once_and_scores_like_a_fresh_one(pack, tmp_path):
    """The photo embeddings and render figures are cached across validations; a second validation
    after training steps reuses them and still equals a fresh trainer's validation of the same weights."""
    from pifr.train.refine import RefineTrainer

    class Net(torch.nn.Module):  # a cheap, deterministic stand-in identity network
        def forward(self, x):
            return {"embedding": torch.nn.functional.avg_pool2d(x, 16).flatten(1), "map": x}

    cfg = _cfg(adv=0.0, val_pairs=4, val_nets="", best_by="cos_idnet_out", feat=1.0)
    tr = RefineTrainer(cfg, tmp_path / "a", packs=[pack], identity=Net())
    tr.val.index = (tr.val.index + tr.train.index)[:4]
    first = tr.validate()
    ref = tr._val_ref
    for _ in range(3):
        tr.train_step()
    second = tr.validate()
    assert tr._val_ref is ref
    assert second["l1_face_render"] == first["l1_face_render"] and second["l1_face_out"] != first["l1_face_out"]
    fresh = RefineTrainer(cfg, tmp_path / "b", packs=[pack], identity=Net())
    fresh.val.index = tr.val.index
    fresh.G.load_state_dict(tr.G.state_dict())
    assert fresh.validate() == second
