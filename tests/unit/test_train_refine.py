"""pifr.train.refine: the render refiner's trainer on real rotate-and-render pairs of the example faces."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

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

    base = dict(arch="tpgan", width=0.0625, adv=0.1, fm=1.0, batch=2, feat=0.0, id_cos=0.0, val_pairs=0, val_every=10**6, log_every=1,
                save_every_s=1e9, lr_g=1e-3)
    return RefineConfig(**{**base, **kw})


def test_flip_table_is_a_mirror_of_the_68_points():
    from pifr.train.refine_data import FLIP_68

    assert sorted(FLIP_68) == list(range(68)) and (FLIP_68[FLIP_68] == np.arange(68)).all()
    assert FLIP_68[36] == 45 and FLIP_68[48] == 54 and FLIP_68[30] == 30 and FLIP_68[0] == 16


def test_flipped_pair_is_the_mirror_image(pack):
    from pifr.train.refine_data import RefinePairs

    pairs = RefinePairs([pack], "train") if len(RefinePairs([pack], "train")) else RefinePairs([pack], "val")
    a, b = pairs.batch([0], [False]), pairs.batch([0], [True])
    assert torch.equal(a["render"].flip(3), b["render"]) and torch.equal(a["mask"].flip(3), b["mask"])
    # The left eye of the flipped face sits where the right eye of the original was, mirrored.
    la, lb = a["landmarks"][0], b["landmarks"][0]
    assert torch.allclose(lb[36:42].mean(0), torch.tensor([128.0, 0.0]) + la[42:48].mean(0) * torch.tensor([-1.0, 1.0]))


def test_split_holds_out_whole_people():
    from pifr.train.refine_data import is_validation, person

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


def test_defaults_are_the_shipped_refiners_recipe():
    """A bare ``python -m pifr.train.refine`` trains what ships (weights/refiner.safetensors records
    its config), not another architecture."""
    from safetensors import safe_open

    from pifr.train.refine import RefineConfig

    with safe_open(str(Path(__file__).resolve().parents[2] / "weights" / "refiner.safetensors"), framework="pt") as f:
        shipped = json.loads(f.metadata()["meta"])["config"]
    mine = RefineConfig()
    for k in ("arch", "width", "heatmaps", "batch", "lr_g", "pixel", "outside", "feat", "id_cos", "adv", "fm", "identity_net"):
        assert getattr(mine, k) == shipped[k], k
    assert list(mine.betas) == shipped["betas"]
    assert mine.sym == 0 and mine.tv == 0  # terms the shipped run did not have


def test_pair_cache_gives_the_batches_the_pack_gives(pack):
    """Pairs decoded once into tensors: the same render, target, mask, face, landmarks and yaw,
    flipped or not, as decoding each batch from the pack."""
    from pifr.train.refine_data import PairCache, RefinePairs

    pairs = RefinePairs([pack], "train")
    pairs.index = pairs.index + RefinePairs([pack], "val").index
    cache = PairCache(pairs, torch.device("cpu"))
    assert len(cache) == len(pairs) == 6
    items, flips = [0, 3, 5, 3], [False, True, False, False]
    a, b = pairs.batch(items, flips), cache.batch(items, flips)
    assert set(a) == set(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        assert torch.allclose(a[k], b[k]), k


def test_symmetry_term_is_zero_on_a_mirror_symmetric_face_and_only_near_frontal():
    from pifr.train.refine_losses import symmetry_term

    torch.manual_seed(0)
    half = torch.rand(2, 3, 128, 64) * 2 - 1
    sym_img = torch.cat([half, half.flip(3)], 3)
    face = torch.zeros(2, 1, 128, 128)
    face[..., 30:100, 30:98] = 1
    assert float(symmetry_term(sym_img, face, torch.tensor([0.0, 5.0]), 10.0)) < 1e-6
    noisy = torch.rand(2, 3, 128, 128) * 2 - 1
    assert float(symmetry_term(noisy, face, torch.tensor([0.0, 5.0]), 10.0)) > 0.1
    # Turned photos are not symmetric about the crop's centre: they do not count.
    assert float(symmetry_term(noisy, face, torch.tensor([30.0, -25.0]), 10.0)) == 0.0


def test_bf16_step_with_every_tpgan_term_is_finite(pack, tmp_path):
    """The GPU recipe's step (TP-GAN refiner, patch D, symmetry, TV, bf16 autocast, pairs cached
    on the device) on a CPU: every loss finite, the weights stay float32 and move."""
    from pifr.train.refine import RefineTrainer

    torch.manual_seed(0)
    tr = RefineTrainer(_cfg(amp="bf16", cache=True, sym=0.3, sym_max_yaw=90.0, tv=1e-4), tmp_path, packs=[pack])
    before = [p.detach().clone() for p in tr.G.parameters()]
    logs = tr.train_step()
    assert {"pixel", "adv", "fm", "d", "sym", "tv", "total"} <= set(logs)
    assert all(np.isfinite(v) for v in logs.values()), logs
    assert all(p.dtype == torch.float32 for p in tr.G.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, tr.G.parameters()))
    assert tr.train_step(log=False) == {} and tr.step == 2  # a step that is not logged reads nothing back


@pytest.mark.parametrize("with_opt", [False, True])
def test_checkpoint_travels_and_continues_the_run(pack, tmp_path, with_opt):
    """``checkpoint.safetensors`` (fp16 networks, bf16 Adam moments optionally) restores the step,
    the weights to fp16 precision and, when kept, the optimiser; another width is refused."""
    from safetensors import safe_open

    from pifr.errors import TrainingError
    from pifr.train.refine import RefineTrainer
    from pifr.train.refine_checkpoint import is_checkpoint

    torch.set_num_threads(1)
    cfg = _cfg(ckpt_optimizer=with_opt)
    a = RefineTrainer(cfg, tmp_path / "a", packs=[pack])
    a.run(steps=2)
    ck = tmp_path / "a" / "checkpoint.safetensors"
    assert is_checkpoint(ck) and not is_checkpoint(tmp_path / "a" / "refiner.safetensors")
    with safe_open(str(ck), framework="pt") as f:
        assert any(k.startswith("opt_g.") for k in f.keys()) == with_opt
    b = RefineTrainer(replace(cfg, init=str(ck)), tmp_path / "b", packs=[pack])
    assert b.step == 2
    for (k, va), vb in zip(a.G.state_dict().items(), b.G.state_dict().values()):
        ref = va.half().float() if va.is_floating_point() else va
        assert torch.equal(ref.to(vb.dtype), vb), k
    for (k, va), vb in zip(a.D.state_dict().items(), b.D.state_dict().values()):
        assert torch.allclose(va.float(), vb.float(), rtol=1e-3, atol=1e-4), k
    sa, sb = a.opt_g.state_dict()["state"], b.opt_g.state_dict()["state"]
    if with_opt:
        assert torch.allclose(sa[0]["exp_avg"], sb[0]["exp_avg"], rtol=1e-2, atol=1e-6)
        assert float(sb[0]["step"]) == 2
    else:
        assert sb == {}
    b.run(steps=3)
    assert b.step == 3
    with pytest.raises(TrainingError, match="width"):
        RefineTrainer(replace(cfg, width=0.125, init=str(ck)), tmp_path / "c", packs=[pack])


def test_cli_takes_a_json_config_and_flags_override_it(pack, tmp_path):
    from pifr.train.refine import main

    pack.save(tmp_path / "p.npz")
    conf = {"packs": [str(tmp_path / "p.npz")], "arch": "tpgan", "width": 0.0625, "batch": 2, "feat": 0.0, "id_cos": 0.0,
            "val_pairs": 0, "adv": 0.1, "fm": 1.0, "sym": 0.3, "tv": 1e-4, "cache": True, "log_every": 1}
    (tmp_path / "c.json").write_text(json.dumps(conf))
    assert main(["--config", str(tmp_path / "c.json"), "--run", str(tmp_path / "run"), "--steps", "2", "--batch", "1",
                 "--threads", "1"]) == 0
    saved = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert "sym" in saved and "tv" in saved
    from pifr.train.refine_checkpoint import is_checkpoint

    assert is_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "checkpoint.safetensors"), framework="pt") as f:
        cfg = json.loads(f.metadata()["config"])
    assert cfg["batch"] == 1 and cfg["arch"] == "tpgan" and cfg["cache"] is True


def test_export_writes_the_checkpoints_generator_as_refiner_weights(pack, tmp_path):
    """``--export CHECKPOINT REFINER``: the library's refiner loader reads the generator back."""
    from pifr.models.refiner import read_refiner
    from pifr.train.refine import RefineTrainer, main

    tr = RefineTrainer(_cfg(), tmp_path / "run", packs=[pack])
    tr.run(steps=1)
    assert main(["--export", str(tmp_path / "run" / "checkpoint.safetensors"), str(tmp_path / "r.safetensors")]) == 0
    net, meta = read_refiner(tmp_path / "r.safetensors")
    assert meta["step"] == 1 and net.config == tr.G.config
    for (k, va), vb in zip(tr.G.state_dict().items(), net.state_dict().values()):
        assert torch.equal((va.half() if va.is_floating_point() else va).to(vb.dtype), vb), k
