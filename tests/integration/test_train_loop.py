"""The trainer on a small pack of real CFP faces: objectives, resume, warm start, DDP, budgets, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pifr.errors import TrainingError
from pifr.train import losses as L
from pifr.train.data import Pack, PairDataset
from pifr.train.config import TrainConfig, as_floats
from pifr.train.loop import Trainer


def _cfg(pack: Path, out: Path, **kw) -> TrainConfig:
    base = dict(pack=str(pack), out=str(out), train_identities="1-3", width=0.125, batch=4, steps=4, identity_net="none",
                adversarial="patch", sample_every=0, ckpt_every=0, val_every=0, log_every=1, frontal_inputs=False, resume=False)
    base.update(kw)
    return TrainConfig(**base)


def _overfit_four_pairs(small_pack, tmp_path, steps, **cfg):
    """Mean pixel L1 of the first and the last 5 of ``steps`` steps on a fixed set of 4 real pairs."""
    ds = PairDataset(Pack.load(small_pack), identities=range(1, 4))
    tr = Trainer(_cfg(small_pack, tmp_path, adversarial="none", lr=1e-3, **cfg))
    tr.train.pairs = ds.pairs[:: max(1, len(ds.pairs) // 4)][:4]  # a fixed tiny set
    first = [float(tr.train_step()["g_pixel"]) for _ in range(5)]
    for _ in range(steps - 10):
        tr.train_step()
    last = [float(tr.train_step()["g_pixel"]) for _ in range(5)]
    return first, last


def test_pixel_term_can_leave_identity_level_pairs_out(small_pack, tmp_path):
    """CFP pairs are identity-level (aligned 0): with pixel_on_identity_pairs=0 the pixel term
    is zero and the rest of the objective still trains."""
    assert PairDataset(Pack.load(small_pack), identities=range(1, 4))[0]["aligned"] == 0.0
    off = as_floats(Trainer(_cfg(small_pack, tmp_path / "off", pixel_on_identity_pairs=0.0)).train_step())
    on = as_floats(Trainer(_cfg(small_pack, tmp_path / "on")).train_step())
    assert off["g_pixel"] == 0 and on["g_pixel"] > 0.05 and off["g_sym"] > 0 and off["g_total"] > 0


@pytest.mark.parametrize("extra", ["plain", "augment", "views"])
def test_resume_reproduces_the_next_steps_exactly(small_pack, tmp_path, extra):
    kw = {"plain": {}, "augment": {"augment": 1.0},
          "views": dict(augment=1.0, id_view_jitter=1.0, identity_net="mobilefacenet", identity_weights="",
                        weights=dict(L.LossWeights().to_dict(), id_cos=1.0))}[extra]
    a = Trainer(_cfg(small_pack, tmp_path / "a", steps=5, **kw))
    for _ in range(3):
        a.train_step()
    ck = a.save(tmp_path / "ck.pt")
    for _ in range(2):
        la = as_floats(a.train_step())
    b = Trainer(_cfg(small_pack, tmp_path / "b", steps=5, **kw))
    b.load(ck)
    for _ in range(2):
        lb = as_floats(b.train_step())
    assert la == lb
    for (k, p), q in zip(a.g.state_dict().items(), b.g.state_dict().values()):
        assert torch.equal(p, q), k


@pytest.mark.parametrize("term", ["ip", "id_cos"])
def test_identity_term_alone_trains_the_generator(small_pack, tmp_path, term):
    """weights.ip (the paper's feature-map L1) or weights.id_cos (1 − cosine of the embeddings)
    alone: the identity network is loaded for it, the term is logged, positive on a fresh generator
    (its outputs are not frontals), and is what moves the generator."""
    only = {k: 0.0 for k in L.LossWeights().to_dict()}
    t = Trainer(_cfg(small_pack, tmp_path / term, weights=dict(only, **{term: 1.0}), identity_net="mobilefacenet",
                     adversarial="none"))
    assert t.id_feats is not None
    g0 = [p.detach().clone() for p in t.g.parameters()]
    logs = as_floats(t.train_step())
    assert logs[f"g_{term}"] > 0 and logs["g_total"] == pytest.approx(logs[f"g_{term}"], rel=1e-5)
    assert any(not torch.equal(a, p) for a, p in zip(g0, t.g.parameters()))


def test_small_generator_overfits_four_real_pairs(small_pack, tmp_path):
    first, last = _overfit_four_pairs(small_pack, tmp_path, 300, width=0.25)
    print(f"overfit 4 real CFP pairs, width 0.25: pixel L1 {np.mean(first):.3f} -> {np.mean(last):.3f} in 300 steps")
    assert np.mean(last) <= 0.5 * np.mean(first), (first, last)


@pytest.mark.slow
def test_generator_without_skips_still_overfits_four_real_pairs(small_pack, tmp_path):
    """skips=8 (no maps or input image above 8×8 px reach the decoder) can still fit pixels: the
    grey constant such a generator once collapsed to in training was the objective's doing, not the path's."""
    first, last = _overfit_four_pairs(small_pack, tmp_path, 150, width=0.125, skips=8)
    print(f"overfit 4 real CFP pairs, width 0.125, skips 8: pixel L1 {np.mean(first):.3f} -> {np.mean(last):.3f} in 150 steps")
    assert np.mean(last) <= 0.5 * np.mean(first), (first, last)


def test_ddp_two_cpu_processes(small_pack, tmp_path):
    """torchrun with 2 gloo processes on CPU: both ranks step, rank 0 writes the run."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pifr.train",
           "--set", f"pack={small_pack}", "train_identities=1-3", f"out={out}", "width=0.125", "batch=2", "steps=3",
           "identity_net=none", "sample_every=0", "ckpt_every=0", "val_every=0", "log_every=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    assert len((out / "losses.csv").read_text().splitlines()) == 4


def test_ddp_processes_stop_together_on_the_wall_clock_budget(small_pack, tmp_path):
    """max_minutes under DDP: the processes agree on the step to stop at (one stopping alone
    would leave the other waiting in a collective), and the run ends and saves."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "pifr.train",
           "--set", f"pack={small_pack}", "train_identities=1-3", f"out={out}", "width=0.125", "batch=2", "steps=100000",
           "identity_net=none", "sample_every=0", "ckpt_every=0", "val_every=0", "log_every=1", "max_minutes=0.05"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr[-3000:]
    rows = len((out / "losses.csv").read_text().splitlines()) - 1
    assert 0 < rows < 100000 and (out / "checkpoint.pt").is_file()


def test_cli_runs_and_writes_artifacts(small_pack, tmp_path):
    from pifr.train.loop import main

    out = tmp_path / "run"
    rc = main(["--set", f"pack={small_pack}", f"val_pack={small_pack}", "train_identities=1-3", "val_identities=351-351",
               f"out={out}", "width=0.125", "batch=2", "steps=2", "identity_net=mobilefacenet", "sample_every=2",
               "ckpt_every=2", "val_every=2", "log_every=1", "val_pairs=2"])
    assert rc == 0
    rows = (out / "losses.csv").read_text().splitlines()
    assert len(rows) == 3 and "g_ip" in rows[0] and "val_id_cos_output" in rows[0] and "val_rank1_output" in rows[0]
    assert (out / "generator_best.safetensors").is_file()  # model selection on the validation score
    assert (out / "samples_000002.png").is_file() and (out / "generator.safetensors").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["train_identities"] == 3 and "splits" in run
    assert run["commit"] == "unknown" or len(run["commit"].split("-")[0]) == 40  # the checkout's commit (+ "-dirty")
    # Validation identities overlapping training ones are refused: a typed error, exit code 2 at the CLI.
    assert main(["--set", f"pack={small_pack}", f"val_pack={small_pack}", "train_identities=1-3", "val_identities=3-3",
                 f"out={tmp_path / 'bad'}", "steps=1", "identity_net=none"]) == 2
    with pytest.raises(TrainingError, match="overlap"):
        Trainer(_cfg(small_pack, tmp_path / "bad", val_pack=str(small_pack), train_identities="1-3", val_identities="3-3"))


def test_cli_names_a_missing_pack_or_init_file_in_one_line(small_pack, tmp_path, capsys):
    """A config whose pack or warm start is not on disk (a carry left behind) stops at once with
    the file named, not a traceback from inside numpy after the networks are built."""
    from pifr.train.loop import main

    common = [f"out={tmp_path / 'r'}", "steps=1", "identity_net=none", "val_pack="]
    assert main(["--set", f"pack={small_pack},{tmp_path / 'nowhere.npz'}", *common]) == 2
    assert "nowhere.npz: no such pack" in capsys.readouterr().err
    assert main(["--set", f"pack={small_pack}", f"init={tmp_path / 'g.safetensors'}", *common]) == 2
    assert "g.safetensors: no such init file" in capsys.readouterr().err


def test_warm_start_takes_networks_but_not_progress(small_pack, tmp_path):
    """init=<checkpoint>: the generator starts from the other run's weights, the step count from 0,
    and the optimisers use this run's learning rate, not the one stored with their state."""
    base = dict(pack=str(small_pack), train_identities="1-3", val_pack="", width=0.125, batch=2, identity_net="none",
                sample_every=0, val_every=0, log_every=1, resume=False)
    a = Trainer(TrainConfig(**base, out=str(tmp_path / "a"), steps=2, lr=1e-3, ckpt_every=2))
    a.run()
    b = Trainer(TrainConfig(**base, out=str(tmp_path / "b"), steps=1, lr=1e-5, init=str(tmp_path / "a" / "checkpoint.pt")))
    assert b.load_networks(tmp_path / "a" / "checkpoint.pt") == 2 and b.step == 0
    assert all(torch.equal(p, q) for p, q in zip(a.g.state_dict().values(), b.g.state_dict().values()))
    assert {g["lr"] for g in b.opt_g.param_groups} == {1e-5}
    b.run()
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["init"] == {"from": str(tmp_path / "a" / "checkpoint.pt"), "step": 2} and b.step == 1


def test_init_from_an_exported_generator_sets_the_generator_alone(small_pack, tmp_path):
    """init=<generator.safetensors> (the fp16 export, what fits a GPU machine's carry): the
    generator and its average start from those weights, the step count from 0; a generator of
    another size is refused by name instead of half-loading."""
    import subprocess
    import sys

    base = dict(pack=str(small_pack), train_identities="1-3", val_pack="", width=0.125, batch=2, identity_net="none",
                sample_every=0, val_every=0, log_every=1, resume=False, ema=0.9)
    a = Trainer(TrainConfig(**base, out=str(tmp_path / "a"), steps=2, lr=1e-3, ckpt_every=2))
    a.run()
    fp16 = tmp_path / "g16.safetensors"
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, str(repo / "scripts" / "export_generator.py"), str(tmp_path / "a" / "generator.safetensors"),
                    str(fp16), "--fp16"], check=True, capture_output=True)
    b = Trainer(TrainConfig(**base, out=str(tmp_path / "b"), steps=1, lr=1e-5, init=str(fp16)))
    assert b.load_networks(fp16) == 2 and b.step == 0
    for net in (b.g, b.g_ema):
        for (k, p), q in zip(net.state_dict().items(), a.g_eval.state_dict().values()):
            if p.is_floating_point():
                assert torch.allclose(p, q.half().float()), k
    b.run()
    assert json.loads((tmp_path / "b" / "run.json").read_text())["init"] == {"from": str(fp16), "step": 2}
    c = Trainer(TrainConfig(**dict(base, width=0.0625), out=str(tmp_path / "c"), steps=1, init=str(fp16)))
    with pytest.raises(ValueError, match="cannot start"):
        c.load_networks(fp16)


def test_wall_clock_budget_stops_saves_and_the_next_job_resumes(small_pack, tmp_path):
    """max_minutes: a run that passes its budget stops early with its checkpoint and generator
    saved (a time-limited job), and a resumed run finishes the remaining steps."""
    base = dict(pack=str(small_pack), train_identities="1-3", val_pack="", width=0.125, batch=2, identity_net="none",
                sample_every=0, val_every=0, log_every=1, ckpt_every=0, steps=3, out=str(tmp_path / "r"))
    a = Trainer(TrainConfig(**base, max_minutes=1e-7))
    a.run()
    assert a.step < 3
    assert (tmp_path / "r" / "checkpoint.pt").is_file() and (tmp_path / "r" / "generator.safetensors").is_file()
    b = Trainer(TrainConfig(**base, resume=True))
    b.run()
    assert b.step == 3


def test_weight_average_follows_the_live_generator_resumes_and_is_what_is_saved(small_pack, tmp_path):
    """ema: the averaged generator is the lerp of its previous value toward the live weights, is
    what validation reports as output and what is saved, and resumes exactly from a checkpoint."""
    from safetensors.torch import load_file

    cfg = _cfg(small_pack, tmp_path / "a", steps=4, ema=0.9, val_pack=str(small_pack), val_identities="351-351",
               identity_net="mobilefacenet", val_pairs=4)
    a = Trainer(cfg)
    before = {k: v.clone() for k, v in a.g_ema.state_dict().items()}
    a.train_step()
    d = min(0.9, 1 / 10)  # the ramp's first value
    for (k, e), p in zip(a.g_ema.named_parameters(), a.g.parameters()):
        assert torch.allclose(e, d * before[k] + (1 - d) * p, atol=1e-6), k
    for _ in range(2):
        a.train_step()
    assert not all(torch.equal(e, p) for e, p in zip(a.g_ema.parameters(), a.g.parameters()))
    assert all(not p.requires_grad for p in a.g_ema.parameters())
    v = a.validate()
    assert {"val_rank1_live", "val_id_cos_live"} <= set(v) and v["val_id_cos_output"] != v["val_id_cos_live"]
    saved = load_file(str(a.save_generator(tmp_path / "g.safetensors")))
    assert all(torch.equal(saved[k], t) for k, t in a.g_ema.state_dict().items())
    ck = a.save(tmp_path / "ck.pt")
    a.train_step()
    b = Trainer(_cfg(small_pack, tmp_path / "b", steps=4, ema=0.9, val_pack=str(small_pack), val_identities="351-351",
                     identity_net="mobilefacenet", val_pairs=4))
    b.load(ck)
    b.train_step()
    assert all(torch.equal(p, q) for p, q in zip(a.g_ema.state_dict().values(), b.g_ema.state_dict().values()))
