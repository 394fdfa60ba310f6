"""How much of the profile→frontal gap can a pose-gated residual in embedding space close?

A diagnostic for the frontalizer work, not a pifr feature. DREAM (Cao et al., CVPR 2018,
"Pose-Robust Face Recognition via Deep Residual Equivariant Mapping") adds to a face's embedding
a residual scaled by a function of its yaw. Here the residual is a small MLP and the scale a
learnt sigmoid of |yaw|, trained on CFP 001–350 (every photo → its person among the 350, scored
against each person's frontal centre), its epoch chosen on CFP 351–400 (the tuning split, with the
frontalization benchmark's protocol: gallery frontal 01, 200 profiles, 700 FP pairs) and reported
on CMU Face Images (never tuned on). It bounds what the 350 training people can teach about
turning a profile's embedding into its frontal one: if a map of the embedding learnt from them
does not beat raw on 351–400, a generator trained on the same people should not be expected to.

    python scripts/embedding_residual.py [--embedders dlib_resnet mobilefacenet] [--epochs 60] [--seeds 3]
    python scripts/embedding_residual.py --packs packs/cfp_train.npz[,packs/render_lfw.npz] --val-pack packs/cfp_val.npz

With ``--packs`` it works on training packs' TP-GAN crops instead (embedded as the trainer's
identity network sees them, ``pifr.train.validation.identity_network``), so renders can be added
to the training people; it is then scored on the validation pack's profiles (gallery: each
person's first frontal crop). Crops are embedded as stored: the trainer's validation mirrors
left-facing profiles first, which is why raw rank-1 differs from its figure.

Prints the per-epoch validation table and, for the chosen epoch, rank-1 / FP accuracy / EER /
TAR@FAR=1 % against raw, McNemar's paired test, and CMU rank-1; writes a JSON record to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _harness import cache_dir, embed_paths, run_header, save_record, weights_sha  # noqa: E402
from frontalization import IDS, cfp_hits, cmu_hits, evaluate  # noqa: E402

from pifr.datasets import cfp_identity, cfp_images, cfp_protocol, cmu_faces, shared_root  # noqa: E402
from pifr.metrics import mcnemar, rank1_hits  # noqa: E402

TRAIN = range(1, 351)


class PoseResidual(nn.Module):
    """``e' = normalise(e + s(|yaw|) · R(e))``: R a two-layer MLP on the unit embedding, s a learnt
    sigmoid of |yaw| / 90° (so near-frontal faces can be left as they are)."""

    def __init__(self, dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.r = nn.Sequential(nn.Linear(dim, hidden), nn.PReLU(), nn.Linear(hidden, dim))
        self.s = nn.Linear(1, 1)
        nn.init.zeros_(self.r[2].weight)
        nn.init.zeros_(self.r[2].bias)  # starts as the identity map: epoch 0 is raw

    def scale(self, yaw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.s((yaw.abs() / 90.0)[:, None]))

    def forward(self, e: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
        return F.normalize(e + self.scale(yaw) * self.r(e), dim=1)


def table(emb, yaws, paths):
    """``(E, yaw, ok)`` arrays for ``paths`` (zeros / NaN where no face was found)."""
    dim = len(next(v for v in emb.values() if v is not None))
    E = np.stack([emb[str(p)] if emb[str(p)] is not None else np.zeros(dim, np.float32) for p in paths])
    Y = np.array([yaws.get(str(p), np.nan) for p in paths], np.float32)
    ok = np.array([emb[str(p)] is not None for p in paths])
    return E.astype(np.float32), np.nan_to_num(Y), ok


def mapped_lookup(model, emb, yaws):
    """Path → mapped unit embedding (``None`` where no face), computed once for every path."""
    keys = [k for k, v in emb.items() if v is not None]
    with torch.no_grad():
        out = model(torch.from_numpy(np.stack([emb[k] for k in keys])),
                    torch.tensor([float(np.nan_to_num(yaws.get(k, 0.0))) for k in keys])).numpy()
    m = dict(zip(keys, out))
    return lambda p: m.get(str(p))


def training_set(E, Y, ids, front, ok):
    """``(x, yaw, target, centres)`` as tensors: the usable photos (``ok``) of every person with a
    frontal among them, labelled by person; ``centres`` ``(people, dim)`` each person's unit mean
    frontal embedding."""
    classes = sorted(set(ids[ok & front].tolist()))
    use = ok & np.isin(ids, classes)
    centres = np.stack([E[ok & front & (ids == c)].mean(0) for c in classes])
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cls = {c: k for k, c in enumerate(classes)}
    return (torch.from_numpy(E[use]), torch.from_numpy(Y[use]), torch.tensor([cls[c] for c in ids[use]]),
            torch.from_numpy(centres))


def train_residual(x, yaw, target, centres, args, seed, evaluate_fn):
    """Train one :class:`PoseResidual` (cross-entropy against the identity centres); ``evaluate_fn(model)``
    every ``--eval-every`` epochs. Returns ``{epoch: (figures, state_dict)}``."""
    torch.manual_seed(seed)
    model = PoseResidual(x.shape[1], args.hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    out = {}
    for epoch in range(1, args.epochs + 1):
        model.train()
        for idx in torch.randperm(len(x)).split(128):
            loss = F.cross_entropy(model(x[idx], yaw[idx]) @ centres.T / args.temperature, target[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch % args.eval_every == 0:
            model.eval()
            out[epoch] = (evaluate_fn(model), {k: v.clone() for k, v in model.state_dict().items()})
    return out


def pack_embeddings(path: str, embedder: str, identities=None):
    """``(E, yaw, identity, frontal)`` of a pack's crops as the trainer's identity network embeds
    them (unit vectors), cached under the pack's path, size and mtime."""
    import hashlib

    from pifr.train.data import Pack, identity_range
    from pifr.train.validation import embedding_fn, identity_network

    st = Path(path).stat()
    key = hashlib.sha256(f"{Path(path).resolve()}|{st.st_size}|{st.st_mtime}|{embedder}".encode()).hexdigest()[:20]
    f = cache_dir() / "embedding_residual" / f"{key}.npz"
    pack = Pack.load(Path(path))
    if f.is_file():
        E = np.load(f)["emb"]
    else:
        embed = embedding_fn(identity_network(embedder))
        E = []
        with torch.no_grad():
            for i in range(0, len(pack), 64):
                x = np.stack([pack.image(k) for k in range(i, min(len(pack), i + 64))])
                E.append(embed(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy())
        E = np.concatenate(E).astype(np.float32)
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f, emb=E)
    keep = np.ones(len(pack), bool) if not identities else np.isin(pack.identity, list(identity_range(identities)))
    return E[keep], pack.yaw[keep].astype(np.float32), pack.identity[keep], pack.frontal[keep]


def pack_mode(args) -> dict:
    """Train on ``--packs`` crops, score rank-1 of ``--val-pack``'s profiles (gallery: first frontal per person)."""
    results = {}
    for name in args.embedders:
        parts = [pack_embeddings(p, name, args.train_identities) for p in args.packs.split(",")]
        E, Y, ids, front = (np.concatenate([p[k] for p in parts]) for k in range(4))
        x, yaw, target, centres = training_set(E, Y, ids, front, np.ones(len(ids), bool))
        vE, vY, vids, vfront = pack_embeddings(args.val_pack, name, "351-400")
        gal_idx = [int(np.flatnonzero(vfront & (vids == c))[0]) for c in sorted(set(vids[vfront].tolist()))]
        probes = np.flatnonzero(~vfront & np.isin(vids, vids[gal_idx]))

        def rank1(emb):
            return float(np.mean(rank1_hits(emb[probes], vids[probes], emb[gal_idx], vids[gal_idx])))

        def evaluate_fn(model):
            with torch.no_grad():
                return {"rank1": rank1(model(torch.from_numpy(vE), torch.from_numpy(vY)).numpy())}

        base = rank1(vE)
        curves = [train_residual(x, yaw, target, centres, args, seed, evaluate_fn) for seed in range(args.seeds)]
        mean = {e: float(np.mean([c[e][0]["rank1"] for c in curves])) for e in curves[0]}
        best = max(mean, key=mean.get)
        print(f"\n{name}: trained on {args.packs} ({len(x)} crops, {len(centres)} people), scored on {len(probes)} "
              f"profiles of {args.val_pack}; raw rank-1 {100 * base:.1f} %; mean of {args.seeds} seeds\n\n"
              "| epoch | rank-1 % |\n|---|---|")
        for e in sorted(mean):
            print(f"| {e}{' (best)' if e == best else ''} | {100 * mean[e]:.1f} |")
        results[name] = {"raw": base, "curve": mean, "best_epoch": best, "train_crops": len(x), "train_people": len(centres)}
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedders", nargs="+", default=["dlib_resnet", "mobilefacenet"])
    ap.add_argument("--detector", default="retinaface")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3, help="independent trainings; the chosen epoch's figures are their mean")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-3)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--packs", default=None, help="train on these packs' crops instead (comma-separated)")
    ap.add_argument("--train-identities", default="", help="--packs: identities to train on (default all; CFP 1-350 at most)")
    ap.add_argument("--val-pack", default=None, help="--packs: the validation pack (CFP 351-400)")
    ap.add_argument("--out", default="results/embedding_residual")
    args = ap.parse_args()
    t0 = time.time()
    if args.packs:
        if not args.val_pack:
            ap.error("--packs needs --val-pack")
        rec = run_header("embedding_residual", f"packs {args.packs}; validation {args.val_pack}", weights_sha(args.embedders),
                         "train: the packs (CFP 001-350, LFW renders); tune/report: CFP 351-400 validation pack")
        rec.update(results=pack_mode(args), params=vars(args), seconds=round(time.time() - t0, 1))
        save_record(Path(args.out), rec, "embedding_residual_packs")
        return
    root = shared_root(args.shared)
    cfp = root / "data" / "cfp"
    rec = run_header("embedding_residual", f"{cfp}; report-only: {root}/data/cmu_faces", weights_sha(args.embedders),
                     "train CFP 001-350; tune (epoch) CFP 351-400; report CMU Face Images")
    train_imgs = cfp_images(cfp, TRAIN)
    frontals = cfp_images(cfp, IDS, "frontal")
    gallery = [im for im in frontals if im.index == 1]
    probes = cfp_images(cfp, IDS, "profile")
    pairs = [x for x in cfp_protocol(cfp, "FP").pairs if cfp_identity(x.a) in IDS and cfp_identity(x.b) in IDS]
    ff_pairs = [x for x in cfp_protocol(cfp, "FF").pairs if cfp_identity(x.a) in IDS and cfp_identity(x.b) in IDS]
    every = [im.path for im in cfp_images(cfp, IDS)]
    cmu = cmu_faces(root / "data" / "cmu_faces" / "cmu_faces_full_and_half.tar.gz", cache_dir() / "cmu_faces")
    cmu_paths = [im.path for im in cmu if im.eyes == "open" and im.pose in ("straight", "left", "right")]
    results = {}
    for name in args.embedders:
        # The same path lists as benchmarks/frontalization.py, so both share its embedding cache.
        raw, yaws = embed_paths(every + cmu_paths, name, args.detector, with_yaw=True)
        tr_emb, tr_yaw = embed_paths([im.path for im in train_imgs], name, args.detector, with_yaw=True)
        E, Y, ok = table(tr_emb, tr_yaw, [im.path for im in train_imgs])
        ids = np.array([im.identity for im in train_imgs])
        front = np.array([im.pose == "frontal" for im in train_imgs])
        x, yaw, target, centres = training_set(E, Y, ids, front, ok)
        raw_of = lambda p: raw.get(str(p))  # noqa: E731
        base = evaluate(raw_of, raw_of, frontals, pairs, ff_pairs, gallery, probes)
        curve, models = {}, {}  # epoch -> evaluate() dict per seed; (seed, epoch) -> state

        def evaluate_fn(model):
            return evaluate(mapped_lookup(model, raw, yaws), raw_of, frontals, pairs, ff_pairs, gallery, probes)

        for seed in range(args.seeds):
            for epoch, (fig, state) in train_residual(x, yaw, target, centres, args, seed, evaluate_fn).items():
                curve.setdefault(epoch, []).append(fig)
                models[(seed, epoch)] = state
        mean = {e: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for e, rs in curve.items()}
        # The epoch: best mean rank-1 + FP accuracy on the tuning identities (as the benchmark's rule).
        best = max(mean, key=lambda e: mean[e]["rank1"] + mean[e]["fp_accuracy"])
        print(f"\n{name}: validation (CFP 351-400), mean of {args.seeds} seeds; raw rank-1 {100 * base['rank1']:.1f} %, "
              f"FP acc {100 * base['fp_accuracy']:.2f} %\n\n| epoch | rank-1 % | FP acc % | FP EER % | TAR@FAR=1% | FF acc % |\n|---|---|---|---|---|---|")
        for e in sorted(mean):
            v = mean[e]
            print(f"| {e}{' (chosen)' if e == best else ''} | {100 * v['rank1']:.1f} | {100 * v['fp_accuracy']:.2f} | "
                  f"{100 * v['fp_eer']:.2f} | {100 * v['fp_tar_at_far_1e-2']:.1f} | {100 * v['ff_accuracy']:.2f} |")
        paired, cmu_rank1 = [], []
        raw_cmu = cmu_hits(raw_of, cmu)
        for seed in range(args.seeds):
            model = PoseResidual(x.shape[1], args.hidden)
            model.load_state_dict(models[(seed, best)])
            model.eval()
            of = mapped_lookup(model, raw, yaws)
            paired.append(asdict(mcnemar(cfp_hits(raw_of, gallery, probes), cfp_hits(of, gallery, probes))))
            hits, people = cmu_hits(of, cmu)
            cmu_rank1.append(float(np.mean(hits)))
            paired[-1]["cmu"] = asdict(mcnemar(raw_cmu[0], hits))
        print(f"\nchosen epoch {best}, per seed — CFP probes gained/lost (p): "
              + "; ".join(f"+{c['gained']}/−{c['lost']} ({c['p_value']:.3f})" for c in paired)
              + f"\nCMU rank-1 (report only; raw {100 * np.mean(raw_cmu[0]):.1f} %, {len(raw_cmu[0])} probes): "
              + ", ".join(f"{100 * r:.1f}" for r in cmu_rank1) + " %; gained/lost "
              + "; ".join(f"+{c['cmu']['gained']}/−{c['cmu']['lost']}" for c in paired))
        results[name] = {"raw": base, "curve": mean, "chosen_epoch": best, "paired": paired,
                         "cmu_raw": float(np.mean(raw_cmu[0])), "cmu_mapped": cmu_rank1,
                         "train_images": len(x), "train_identities": len(centres)}
    rec.update(results=results, params=vars(args), seconds=round(time.time() - t0, 1))
    save_record(Path(args.out), rec, "embedding_residual")
    print(json.dumps({k: {"chosen_epoch": v["chosen_epoch"]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
