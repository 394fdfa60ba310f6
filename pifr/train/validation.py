"""Validation of a TP-GAN generator on held-out pairs, as the trainer runs it at every check and
on its own, for any generator file and any pack:

    python -m pifr.train.validation --generator runs/x/generator_best.safetensors \\
        --pack packs/cfp_val.npz --identities 351-400 [--identity-net dlib_resnet] [--pairs 200]

Figures (identity network = a frozen face network seen through :class:`~pifr.train.losses.IdentityFeatures`):
identity cosine of output → true frontal against raw input → true frontal, and — because a face
network's cosines are compressed (dlib's impostors score ~0.8) and say little about
discrimination — rank-1 of output and of raw input among the pack's validation identities, the
gallery being the first true frontal of each; mean L1 of output to its target.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import losses as L
from .data import PairDataset, identity_range

#: ``(input, input_lm) → output`` at 128 px, all ``(B, 3, 128, 128)`` in [-1, 1] (``input_lm`` ``(B, 5, 2)``).
GenerateFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ValReference:
    """The fixed half of validation, computed once: CPU batches ``(input, input_lm, target)``,
    the identity network's unit embeddings ``(n, dim)`` of the inputs and targets, and each
    pair's identity."""

    batches: List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    e_input: torch.Tensor
    e_target: torch.Tensor
    identities: List[int]


def identity_network(name: str, weights: str = "",
                     device: torch.device = torch.device("cpu")) -> "L.IdentityFeatures | L.IdentityEnsemble":
    """The embedder ``name`` (e.g. ``"dlib_resnet"``) as a frozen identity network on TP-GAN crops.
    ``weights``: a registered weights name (e.g. ``"dlib_resnet_fp16"``), a file path, or empty for
    the embedder's own registered weights.

    ``"a+b"`` names an ensemble (:class:`pifr.train.losses.IdentityEnsemble`), its weights given
    the same way (``"dlib_resnet_fp16+"``: dlib's fp16 copy, then b's own weights)."""
    if "+" in name:
        names = name.split("+")
        ws = weights.split("+") if weights else [""] * len(names)
        if len(ws) != len(names) or len(set(names)) != len(names):
            raise ValueError(f"identity_net {name!r} with identity_weights {weights!r}: one weights entry per "
                             "distinct network, joined by '+' (empty for a network's own weights)")
        return L.IdentityEnsemble({n: identity_network(n, w, device) for n, w in zip(names, ws)}).to(device)
    from ..alignment import TPGAN_128
    from ..embedders import embedder_spec
    from ..weights import registry

    entry = embedder_spec(name)
    net, _ = entry.load_network(weights=weights) if weights in registry() else entry.load_network(path=weights or None)
    return L.IdentityFeatures(net, TPGAN_128, entry.template).to(device)


def embedding_fn(id_feats: L.IdentityFeatures, view_jitter: float = 0.0,
                 seed: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
    """``(B, 3, 128, 128)`` TP-GAN crops in [-1, 1] → ``(B, dim)`` unit embeddings (float32).

    ``view_jitter`` > 0: each image is seen through its own random view
    (:class:`pifr.train.losses.RandomView` at that amount), drawn in call order from one generator
    seeded by ``seed`` — to ask how much of a generator's score is tied to the network's one fixed
    view of the crop (a generator can learn marks that only that view reads)."""
    g = torch.Generator().manual_seed(seed) if view_jitter > 0 else None

    def embed(t: torch.Tensor) -> torch.Tensor:
        view = None if g is None else L.RandomView.draw(len(t), view_jitter, g, t.device)
        return F.normalize(id_feats(t, view)["embedding"].float(), dim=1)

    return embed


@torch.no_grad()
def reference(val: PairDataset, n: int, batch: int, embed: Callable[[torch.Tensor], torch.Tensor],
              device: torch.device) -> ValReference:
    """The first ``n`` pairs of ``val`` in batches of ``batch``, with their input and target embeddings."""
    n = min(n, len(val))
    batches, e_in, e_tgt, ids = [], [], [], []
    for i in range(0, n, batch):
        items = [val[k] for k in range(i, min(n, i + batch))]
        x, xl, y = (torch.stack([it[k] for it in items]) for k in ("input", "input_lm", "target"))
        batches.append((x, xl, y))
        e_in.append(embed(x.to(device)).cpu())
        e_tgt.append(embed(y.to(device)).cpu())
        ids.extend(int(it["identity"]) for it in items)
    if not ids:
        raise ValueError("no validation pairs")
    return ValReference(batches, torch.cat(e_in), torch.cat(e_tgt), ids)


def first_target_gallery(ref: ValReference) -> Tuple[torch.Tensor, torch.Tensor]:
    """The gallery validation scores against: each identity's first target, in order of first
    appearance — ``(identities (k,), unit embeddings (k, dim))``."""
    first: Dict[int, int] = {}
    for k, v in enumerate(ref.identities):
        first.setdefault(v, k)
    return torch.tensor(list(first)), ref.e_target[list(first.values())]


def fused_key(name: str, weight: float) -> str:
    """The :func:`figures` key of generator ``name``'s rank-1 fused with the raw input at ``weight``."""
    return f"val_rank1_{name}_fused{weight:g}"


@torch.no_grad()
def figures(nets: Dict[str, GenerateFn], ref: ValReference, embed: Callable[[torch.Tensor], torch.Tensor],
            device: torch.device, probes: Optional[torch.Tensor] = None,
            fusion: Sequence[float] = (), hits: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, float]:
    """``val_id_cos_input``, ``val_rank1_input``, and per generator ``name`` in ``nets``
    ``val_id_cos_<name>``, ``val_rank1_<name>`` and ``val_nearer_<name>`` (the share of outputs
    nearer their target than their input in the embedding: 0 for a copy; another frontal photo of
    the person scores 0.95 with dlib on CFP 351–400); ``val_l1`` of the
    first generator.
    ``probes``: bool ``(n,)``, the pairs that are scored (default all); the gallery is the same.
    ``fusion``: weights w for which ``val_rank1_<name>_fused<w>`` is also given, the rank-1 of
    normalise((1 − w)·raw input + w·output), the embedding ``verify(frontalize="auto")`` uses.
    ``hits``: a dict to fill with each scored pair's rank-1 hit, bool ``(scored,)``, under
    ``"input"`` and each generator's name (for paired tests such as :func:`pifr.eval.metrics.mcnemar`)."""
    e_out: Dict[str, List[torch.Tensor]] = {k: [] for k in nets}
    l1 = []
    for x, xl, y in ref.batches:
        x, xl, y = x.to(device), xl.to(device), y.to(device)
        for k, (name, gen) in enumerate(nets.items()):
            o = gen(x, xl)
            e_out[name].append(embed(o).cpu())
            if k == 0:
                l1.append((o - y).abs().mean((1, 2, 3)).cpu())
    ei, et, idt = ref.e_input, ref.e_target, torch.tensor(ref.identities)
    gal_ids, gal = first_target_gallery(ref)
    m = torch.ones(len(idt), dtype=torch.bool) if probes is None else probes
    hit = lambda q: gal_ids[(q[m] @ gal.T).argmax(1)] == idt[m]  # noqa: E731
    r1 = lambda q: float(hit(q).float().mean())  # noqa: E731
    cos = lambda q: float((q[m] * et[m]).sum(1).mean())  # noqa: E731
    out = {"val_id_cos_input": cos(ei), "val_rank1_input": r1(ei),
           "val_l1": float(torch.cat(l1)[m].mean()) if l1 else float("nan")}
    if hits is not None:
        hits["input"] = hit(ei)
    for name, embs in e_out.items():
        eo = torch.cat(embs)
        out[f"val_id_cos_{name}"], out[f"val_rank1_{name}"] = cos(eo), r1(eo)
        if hits is not None:
            hits[name] = hit(eo)
        out[f"val_nearer_{name}"] = float(((eo[m] * et[m]).sum(1) > (eo[m] * ei[m]).sum(1)).float().mean())
        for w in fusion:
            out[fused_key(name, w)] = r1(F.normalize((1.0 - w) * ei + w * eo, dim=1))
    return out


@torch.no_grad()
def comparison_grid(ds: PairDataset, indices: Sequence[int], nets: Sequence[GenerateFn],
                    device: torch.device) -> np.ndarray:
    """One row per pair ``indices`` of ``ds``: input | each generator's output | target, as a
    ``(len(indices) · 128, (2 + len(nets)) · 128, 3)`` uint8 RGB image."""
    items = [ds[i] for i in indices]
    x, xl, y = (torch.stack([it[k] for it in items]).to(device) for k in ("input", "input_lm", "target"))
    cols = [x, *(gen(x, xl) for gen in nets), y]
    img = torch.cat([torch.cat(list(c), 1) for c in cols], 2)  # (3, n·128, k·128)
    return ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy().astype(np.uint8)


def other_photo_probes(val: PairDataset, ref: ValReference) -> torch.Tensor:
    """Bool ``(n,)``: the pairs whose target is not their identity's gallery photo. On rendered
    packs a render of the gallery photo itself is easier to match than one of another photo."""
    gallery: Dict[int, int] = {}
    for k, ident in enumerate(ref.identities):
        gallery.setdefault(ident, val.pairs[k][1])
    return torch.tensor([val.pairs[k][1] != gallery[ident] for k, ident in enumerate(ref.identities)])


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pifr.train.validation",
                                 description="Validation figures of TP-GAN generator files on a pack's pairs.")
    ap.add_argument("--generator", nargs="+", required=True, help="generator .safetensors file(s) written by pifr-train")
    ap.add_argument("--pack", required=True, help="a pack (.npz) of held-out pairs")
    ap.add_argument("--identities", default="", help="e.g. 351-400 (default: every identity in the pack)")
    ap.add_argument("--identity-net", default="dlib_resnet")
    ap.add_argument("--identity-weights", default="", help="registered weights name or file (default: the embedder's own)")
    ap.add_argument("--pairs", type=int, default=200, help="the first N pairs, as the trainer's val_pairs")
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--other-photos", action="store_true",
                    help="score only pairs whose target is not the gallery photo (for rendered packs)")
    ap.add_argument("--fusion", type=float, nargs="*", default=[],
                    help="also the rank-1 of normalise((1-w)*raw + w*output) for each weight w in (0, 1)")
    ap.add_argument("--view-jitter", type=float, default=0.0,
                    help="the identity network sees every image through its own random view of this amount "
                         "(1 = RandomView's ranges; seeded; 0 = its one fixed view, as the trainer's check)")
    ap.add_argument("--paired", action="store_true",
                    help="also each file's outputs against the first file's, pair by pair: rank-1 hits gained, lost, "
                         "and the exact McNemar p-value")
    ap.add_argument("--json", action="store_true", help="one JSON object per generator instead of a table")
    ap.add_argument("--grid", help="also write a PNG: input | each generator's output | target, one row per pair")
    ap.add_argument("--grid-rows", type=int, default=6, help="pairs in --grid, evenly spaced over the scored pairs")
    args = ap.parse_args(argv)
    if any(not 0.0 < w < 1.0 for w in args.fusion):
        ap.error("--fusion weights must lie strictly between 0 and 1 (1 is the output alone)")
    if args.view_jitter < 0:
        ap.error("--view-jitter must be >= 0")

    from ..errors import PifrError
    from ..generator import Frontalizer
    from .data import Pack

    device = torch.device(args.device)
    val = PairDataset(Pack.load(Path(args.pack)), identity_range(args.identities), frontal_inputs=False, max_targets_per_input=1)
    feats = identity_network(args.identity_net, args.identity_weights, device).eval()
    ref = reference(val, args.pairs, args.batch, embedding_fn(feats, args.view_jitter, seed=1), device)
    probes = other_photo_probes(val, ref) if args.other_photos else None
    scored = len(ref.identities) if probes is None else int(probes.sum())
    if scored == 0:
        print("error: no pairs to score (with --other-photos: every target is a gallery photo)", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{scored} pairs scored{' (targets other than the gallery photo)' if args.other_photos else ''}, "
              f"{len(set(ref.identities))} identities of {args.pack} ({args.identities or 'all'}); "
              f"identity network {args.identity_net}"
              f"{f', each image seen through a random view (amount {args.view_jitter:g})' if args.view_jitter else ''}\n")
        fused_cols = "".join(f" rank-1 fused w={w:g} |" for w in args.fusion)
        print(f"| generator | rank-1 output | rank-1 raw input |{fused_cols} cos output | cos raw input "
              "| nearer target than input | L1 |")
        print("|---" * (7 + len(args.fusion)) + "|")
    failed = 0
    gens: List[GenerateFn] = []
    names: List[str] = []  # the files that loaded, in grid order
    hits: List[torch.Tensor] = []  # their per-pair rank-1 hits, for --paired
    for g in args.generator:
        try:
            net = Frontalizer(g, device).net
        except PifrError as e:  # one bad file does not stop the others
            print(f"{g}: {type(e).__name__}: {e}", file=sys.stderr)
            failed += 1
            continue

        def gen(x: torch.Tensor, xl: torch.Tensor, net=net) -> torch.Tensor:
            return net(x, xl, torch.zeros(len(x), net.noise_dim, device=x.device))["img128"]

        gens.append(gen)
        names.append(g)
        # Each file's outputs through the same random views (if any), whatever its place in the list.
        h: Dict[str, torch.Tensor] = {}
        f = figures({"output": gen}, ref, embedding_fn(feats, args.view_jitter, seed=2), device, probes, args.fusion, h)
        hits.append(h["output"])
        if args.json:
            print(json.dumps({"generator": g, "pack": args.pack, "identities": args.identities, "pairs": scored, "other_photos": args.other_photos,
                              "identity_net": args.identity_net, "view_jitter": args.view_jitter, **f}))
        else:
            fused = "".join(f" {f[fused_key('output', w)]:.3f} |" for w in args.fusion)
            print(f"| {g} | {f['val_rank1_output']:.3f} | {f['val_rank1_input']:.3f} |{fused} {f['val_id_cos_output']:.3f} "
                  f"| {f['val_id_cos_input']:.3f} | {f['val_nearer_output']:.3f} | {f['val_l1']:.3f} |")
    if args.paired and len(hits) > 1:
        from ..eval.metrics import mcnemar

        if not args.json:
            print(f"\nOutputs against {names[0]}'s, pair by pair (exact McNemar)\n\n"
                  "| generator | gained | lost | p |\n|---|---|---|---|")
        for g, h in zip(names[1:], hits[1:]):
            c = mcnemar(hits[0].numpy(), h.numpy())
            print(json.dumps({"paired": g, "against": names[0], "gained": c.gained, "lost": c.lost, "p_value": c.p_value})
                  if args.json else f"| {g} | {c.gained} | {c.lost} | {c.p_value:.4f} |")
    if args.grid and gens:
        from PIL import Image

        scored_idx = [k for k in range(len(ref.identities)) if probes is None or bool(probes[k])]
        rows = [scored_idx[round(i)] for i in np.linspace(0, len(scored_idx) - 1, min(args.grid_rows, len(scored_idx)))]
        Image.fromarray(comparison_grid(val, rows, gens, device)).save(args.grid)
        print(f"\n{args.grid}: input | {' | '.join(names)} | target, pairs {rows}",
              file=sys.stderr if args.json else sys.stdout)
    return 2 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
