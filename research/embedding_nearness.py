"""Diagnostic: is a generator's output nearer, in a face network's embedding, to the person's frontal
photo or to the profile it was made from?

For every profile of a pack that has at least two frontal photos of its person: the share of
profiles whose candidate is nearer (cosine) the first frontal than the profile itself, and the
mean ``relu(cos(candidate, profile) − cos(candidate, frontal))`` (``terms.identity_contrast``, once a training term).
Candidates: the person's second frontal photo (what a true frontalization could look like) and
each generator's output. A copy of the profile is never nearer the frontal.

    python -m research.embedding_nearness packs/cfp_val.npz --identities 351-400 [--generator G ...] [--identity-net dlib_resnet]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from pifr.generator import Frontalizer
from pifr.train import validation as V
from pifr.train.data import Pack, PairDataset, identity_range
from research.terms import identity_contrast  # research/terms.py: the term left training


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pack")
    ap.add_argument("--identities", default="351-400")
    ap.add_argument("--generator", nargs="*", default=[])
    ap.add_argument("--identity-net", default="dlib_resnet")
    ap.add_argument("--batch", type=int, default=25)
    args = ap.parse_args()
    ds = PairDataset(Pack.load(Path(args.pack)), identity_range(args.identities), max_targets_per_input=2)
    first: dict = {}
    for k, (i, _) in enumerate(ds.pairs):
        first.setdefault(i, []).append(k)
    pairs = [(ds[ks[0]], ds[ks[1]]) for ks in first.values() if len(ks) >= 2]
    x, xl, f1 = (torch.stack([a[key] for a, _ in pairs]) for key in ("input", "input_lm", "target"))
    f2 = torch.stack([b["target"] for _, b in pairs])
    embed = V.embedding_fn(V.identity_network(args.identity_net).eval())

    def emb(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([embed(t[i:i + args.batch]) for i in range(0, len(t), args.batch)])

    ex, e1 = emb(x), emb(f1)
    print(f"{args.pack}: {len(pairs)} profiles of identities {args.identities} with two frontals; {args.identity_net}")
    print("| candidate | nearer the frontal than the profile | contrast term | cos to frontal | cos to profile |")
    print("|---|---|---|---|---|")

    def row(name: str, e: torch.Tensor) -> None:
        c1, cx = F.cosine_similarity(e, e1, dim=1), F.cosine_similarity(e, ex, dim=1)
        print(f"| {name} | {float((c1 > cx).float().mean()):.3f} | {float(identity_contrast(e, e1, ex)):.3f} "
              f"| {float(c1.mean()):.3f} | {float(cx.mean()):.3f} |")

    row("the profile (a copy)", ex)
    row("another frontal photo of the person", emb(f2))
    for g in args.generator:
        net = Frontalizer(g, torch.device("cpu")).net
        outs = [net(x[i:i + args.batch], xl[i:i + args.batch], torch.zeros(len(x[i:i + args.batch]), net.noise_dim))["img128"]
                for i in range(0, len(x), args.batch)]
        row(g, emb(torch.cat(outs)))


if __name__ == "__main__":
    main()
