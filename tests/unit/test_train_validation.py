"""Validation figures on synthetic embeddings."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


def test_other_photo_probes_leave_out_renders_of_the_gallery_photo():
    """Pixel-aligned packs pair renders with the photo they came from; --other-photos scores only
    the pairs whose photo is not the one in the gallery (the first target of each identity)."""
    from pifr.train.validation import ValReference, figures, other_photo_probes

    # identity 0: photos 10 (gallery) and 11; identity 1: photo 20 only.
    val = SimpleNamespace(pairs=[(1, 10), (2, 10), (3, 11), (4, 20), (5, 11)])
    far = torch.nn.functional.normalize(torch.tensor([0.1, 0.0, 0.9]), dim=0)  # photo 11 looks like identity 1
    e = torch.stack([torch.eye(3)[0], torch.eye(3)[0], far, torch.eye(3)[2], far])
    ref = ValReference([], e, e, [0, 0, 0, 1, 0])
    probes = other_photo_probes(val, ref)
    assert probes.tolist() == [False, False, True, False, True]
    every, other = (figures({}, ref, lambda t: t, torch.device("cpu"), p) for p in (None, probes))
    assert every["val_rank1_input"] == pytest.approx(0.6) and other["val_rank1_input"] == 0.0


def test_nearer_counts_outputs_closer_to_their_target_than_to_their_input():
    from pifr.train.validation import ValReference, figures

    g = torch.Generator().manual_seed(0)
    x, y = (torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1) for _ in range(2))
    halfway = x + 2 * y  # nearer y than x
    ref = ValReference([(x[..., None, None], torch.zeros(6, 5, 2), y[..., None, None])], x, y, list(range(6)))
    embed = lambda t: torch.nn.functional.normalize(t.flatten(1), dim=1)  # noqa: E731
    f = figures({"copy": lambda a, b: a, "target": lambda a, b: y[..., None, None], "mix": lambda a, b: halfway[..., None, None]},
                ref, embed, torch.device("cpu"))
    assert (f["val_nearer_copy"], f["val_nearer_target"], f["val_nearer_mix"]) == (0.0, 1.0, 1.0)


def test_figures_give_each_scored_pairs_rank1_hit_for_paired_tests():
    """figures(hits=...) fills each scored pair's rank-1 hit (gallery: each identity's first target)
    for the input and every generator; mcnemar over them counts the pairs one gets and the other misses."""
    from pifr.eval.metrics import mcnemar
    from pifr.train.validation import ValReference, figures

    unit = torch.nn.functional.normalize
    et = torch.eye(2)[[0, 0, 1, 1]]  # identities 0, 0, 1, 1; gallery: pairs 0 and 2
    ei = unit(torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.1, 1.0], [1.0, 0.1]]), dim=1)  # pairs 1 and 3 look like the other person
    ref = ValReference([(ei[..., None, None], torch.zeros(4, 5, 2), et[..., None, None])], ei, et, [0, 0, 1, 1])
    nets = {"copy": lambda a, b: a, "target": lambda a, b: et[..., None, None]}
    embed = lambda t: unit(t.flatten(1), dim=1)  # noqa: E731
    h = {}
    f = figures(nets, ref, embed, torch.device("cpu"), hits=h)
    assert h["input"].tolist() == h["copy"].tolist() == [True, False, True, False] and f["val_rank1_input"] == 0.5
    assert h["target"].tolist() == [True] * 4
    c = mcnemar(h["copy"].numpy(), h["target"].numpy())
    assert (c.gained, c.lost) == (2, 0)
    h = {}
    figures(nets, ref, embed, torch.device("cpu"), torch.tensor([False, True, True, False]), hits=h)
    assert h["input"].tolist() == [False, True] and h["target"].tolist() == [True, True]


def test_fused_rank1_mixes_raw_and_output_embeddings():
    """--fusion: rank-1 of normalise((1 − w)·raw + w·output). Here the raw input and the output each
    identify one of two probes, and their even mix identifies both."""
    from pifr.train.validation import ValReference, figures

    unit = lambda *v: torch.nn.functional.normalize(torch.tensor(v, dtype=torch.float32), dim=0)  # noqa: E731
    raw = torch.stack([unit(0.6, 0.8, 0.0), unit(0.0, 1.0, 0.0)])  # probe 0 (person 0) looks like person 1
    out = torch.stack([unit(1.0, 0.0, 0.0), unit(0.6, 0.4, 0.0)])  # the output gets probe 0 right, probe 1 wrong
    tgt = torch.eye(3)[:2]
    ref = ValReference([(raw[..., None, None], torch.zeros(2, 5, 2), tgt[..., None, None])], raw, tgt, [0, 1])
    embed = lambda t: torch.nn.functional.normalize(t.flatten(1), dim=1)  # noqa: E731
    f = figures({"g": lambda a, b: out[..., None, None]}, ref, embed, torch.device("cpu"), fusion=(0.01, 0.5))
    assert (f["val_rank1_input"], f["val_rank1_g"]) == (0.5, 0.5)
    assert f["val_rank1_g_fused0.5"] == 1.0 and f["val_rank1_g_fused0.01"] == 0.5
