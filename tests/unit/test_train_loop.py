"""Trainer plumbing that needs no data: per-step random streams, refused options."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pifr.errors import TrainingError
from pifr.train import losses as L
from pifr.train.loop import Trainer, TrainConfig


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

