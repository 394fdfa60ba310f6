"""Trainer plumbing that needs no data: per-step random streams, refused options."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pifr.errors import TrainingError
from pifr.train import losses as L
from pifr.train.config import TrainConfig
from pifr.train.loop import Trainer


def test_step_random_streams_are_distinct_across_streams_steps_and_ranks_and_repeat_for_the_same_key():
    """Each (stream, step, rank) gets its own seed: with additive seeds (seed + step·k + rank) rank k
    of one step drew what rank 0 of the next did."""
    def first_draws(stream, step, rank, seed=0):
        me = SimpleNamespace(cfg=SimpleNamespace(seed=seed), step=step, rank=rank)
        return tuple(torch.rand(4, generator=Trainer._step_rng(me, stream)).tolist())

    keys = [(s, st, r) for s in ("augment", "view", "domain") for st in range(12) for r in range(8)]
    draws = {first_draws(*k) for k in keys}
    assert len(draws) == len(keys)
    assert first_draws("view", 5, 1) == first_draws("view", 5, 1) != first_draws("view", 5, 1, seed=1)


def test_options_and_terms_that_left_training_are_refused_by_name(tmp_path):
    """A config naming a removed option or loss term (an old run's config.json) stops at once with
    a typed error that says where they went, before any pack is read."""
    with pytest.raises(TrainingError, match="unknown config key 'domain_pack'"):
        TrainConfig.from_args(None, ["domain_pack=x.npz"])
    with pytest.raises(TrainingError, match="research/LOG.md"):
        Trainer(TrainConfig(pack=str(tmp_path / "absent.npz"), weights={"pixel": 1.0, "pose": 1.0}))
    assert {f for f in L.LossWeights().to_dict()} == {"pixel", "sym", "adv", "ip", "tv", "ce", "id_cos"}



def test_trainer_steps_saves_and_resumes_exactly_on_the_example_photos(examples_pack, tmp_path):
    """The whole training path offline: a tiny generator on the shipped photos' pairs, every term
    of the recipe on (the identity network is the shipped MobileFaceNet), two steps, a checkpoint,
    and a resumed trainer that takes the next step exactly as the first one does."""
    cfg = dict(pack=str(examples_pack), out=str(tmp_path / "a"), train_identities="1-2", val_pack="", width=0.0625,
               skips=8, batch=2, steps=3, identity_net="mobilefacenet", augment=1.0, id_view_jitter=1.0, ema=0.9,
               pixel_on_identity_pairs=0.0, weights=dict(L.LossWeights().to_dict(), id_cos=1.0),
               sample_every=0, ckpt_every=0, val_every=0, log_every=1)
    a = Trainer(TrainConfig(**cfg))
    assert len(a.train) == 3  # each turned photo paired with each frontal of its person: 2 + 1
    logs = [a.train_step() for _ in range(2)]
    assert all(k in logs[-1] for k in ("g_pixel", "g_sym", "g_adv", "g_ip", "g_id_cos", "g_tv", "g_total", "d"))
    ck = a.save(tmp_path / "ck.pt")
    la = {k: float(v) for k, v in a.train_step().items()}
    b = Trainer(TrainConfig(**dict(cfg, out=str(tmp_path / "b"))))
    b.load(ck)
    lb = {k: float(v) for k, v in b.train_step().items()}
    assert la == lb
    g = a.save_generator(tmp_path / "g.safetensors")
    from pifr.generator import Frontalizer

    assert Frontalizer(g).net.config == a.g.config
