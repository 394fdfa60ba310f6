"""Diagnostic: how much of a generator's identity score sits in the fixed mark its outputs share?

Some generators draw the same bright mark at the same place on every face (research/LOG.md, stage
GW). The mark is found as the pixels whose greenness (G − (R + B)/2), averaged over all outputs,
lies 3 standard deviations above its mean over the image; it is removed by putting there the
mirror image's pixels (the other side of the face). For each identity network: rank-1 of the
outputs against one frontal per person, and the mean cosine to the person's own frontal and to the
others', with and without the mark.

    python -m research.output_mark carry/cfp_val.npz --generator G [G ...] [--identities 351-400] \\
        [--net dlib_resnet=dlib_resnet_fp16 mobilefacenet= mobilefacenet_casia=path/to/068.ckpt]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pifr.generator import Frontalizer
from pifr.train import validation as V
from pifr.train.data import Pack, PairDataset, identity_range


def mark_mask(outputs: torch.Tensor, sigmas: float = 3.0) -> torch.Tensor:
    """``(N, 3, H, W)`` outputs in [-1, 1] → ``(H, W)`` bool: where the mean greenness stands out."""
    green = (outputs[:, 1] - (outputs[:, 0] + outputs[:, 2]) / 2).mean(0)
    return green > green.mean() + sigmas * green.std()


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pack")
    ap.add_argument("--generator", nargs="+", required=True)
    ap.add_argument("--identities", default="351-400")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--net", nargs="+", default=["dlib_resnet=dlib_resnet_fp16", "mobilefacenet="],
                    help="identity networks as NAME=WEIGHTS (empty: the embedder's own)")
    args = ap.parse_args()
    cpu = torch.device("cpu")
    val = PairDataset(Pack.load(Path(args.pack)), identity_range(args.identities), frontal_inputs=False,
                      max_targets_per_input=1)
    n = min(args.pairs, len(val))
    items = [val[k] for k in range(n)]
    x, xl = (torch.stack([it[k] for it in items]) for k in ("input", "input_lm"))
    outputs = {}
    for g in args.generator:
        net = Frontalizer(g, cpu).net
        o = torch.cat([net(x[i:i + 20], xl[i:i + 20], torch.zeros(len(x[i:i + 20]), net.noise_dim))["img128"]
                       for i in range(0, n, 20)])
        mask = mark_mask(o)
        rows, cols = mask.nonzero(as_tuple=True)
        print(f"{g}: mark of {int(mask.sum())} pixels" + (f", rows {int(rows.min())}-{int(rows.max())}, "
                                                          f"columns {int(cols.min())}-{int(cols.max())}" if len(rows) else ""))
        fixed = o.clone()
        fixed[:, :, mask] = o.flip(3)[:, :, mask]
        outputs[Path(g).stem] = (o, fixed)
    for spec in args.net:
        name, _, weights = spec.partition("=")
        embed = V.embedding_fn(V.identity_network(name, weights, cpu).eval())
        ref = V.reference(val, n, 20, embed, cpu)
        ids = torch.tensor(ref.identities)
        gal_ids, gal = V.first_target_gallery(ref)
        own = gal_ids[None, :] == ids[:, None]

        def stats(e: torch.Tensor) -> str:
            s = e @ gal.T
            r1 = float((gal_ids[s.argmax(1)] == ids).float().mean())
            return f"rank-1 {r1:.3f}, cos own {float(s[own].mean()):.3f} / others {float(s[~own].mean()):.3f}"

        print(f"\n{name}: raw profiles {stats(ref.e_input)}")
        for stem, (o, fixed) in outputs.items():
            a = torch.cat([embed(o[i:i + 20]) for i in range(0, n, 20)])
            b = torch.cat([embed(fixed[i:i + 20]) for i in range(0, n, 20)])
            print(f"  {stem}: outputs {stats(a)} | mark removed {stats(b)}")


if __name__ == "__main__":
    main()
