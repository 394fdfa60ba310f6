"""Trainer plumbing that needs no data: per-step random streams."""
from __future__ import annotations

from types import SimpleNamespace

import torch

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
