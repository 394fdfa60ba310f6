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

    python -m research.embedding_residual [--embedders dlib_resnet mobilefacenet] [--epochs 60] [--seeds 3]
    python -m research.embedding_residual --lfw       # CFP 001-350 and LFW's people
    python -m research.embedding_residual --packs packs/cfp_train.npz[,packs/render_lfw.npz] --val-pack packs/cfp_val.npz
    python -m research.embedding_residual --packs packs/cfp_train.npz --val-pack packs/cfp_val.npz \\
        --people 44 88 175 263 350 --plot people.png     # the gain against the number of training people

With ``--lfw`` LFW's real photos join the training people (every CFP person left out; an LFW photo
is its person's frontal when its estimated |yaw| is at most 15°).

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
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import cache_dir, embed_paths, run_header, save_record, weights_sha  # noqa: E402
from benchmarks.frontalization import IDS, cfp_hits, cmu_hits, evaluate  # noqa: E402

from pifr.eval.datasets import cfp_identity, cfp_images, cfp_names, cfp_protocol, cmu_faces, lfw_people, shared_root  # noqa: E402
from pifr.eval.metrics import mcnemar, rank1_hits  # noqa: E402

TRAIN = range(1, 351)
#: ``--lfw``: an LFW photo counts as its person's frontal when its estimated |yaw| is at most this (degrees).
LFW_FRONTAL = 15.0
#: ``--lfw``: at most this many photos of one person (in LFW's file order).
LFW_MAX_PHOTOS = 20


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

    from pifr.train.data import Pack
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
            for i in tqdm(range(0, len(pack), 64), desc=f"embed {Path(path).name} ({embedder})", unit="batch"):
                x = np.stack([pack.image(k) for k in range(i, min(len(pack), i + 64))])
                E.append(embed(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy())
        E = np.concatenate(E).astype(np.float32)
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f, emb=E)
    keep = _kept(pack, identities)
    return E[keep], pack.yaw[keep].astype(np.float32), pack.identity[keep], pack.frontal[keep]


def _kept(pack, identities) -> np.ndarray:
    from pifr.train.data import identity_range

    return np.ones(len(pack), bool) if not identities else np.isin(pack.identity, list(identity_range(identities)))


def pack_labels(path: str, identities=None):
    """``(identity, frontal)`` of a pack's crops, as :func:`pack_embeddings` keeps them, without
    embedding anything: what the checks need before minutes of embedding."""
    from pifr.train.data import Pack

    pack = Pack.load(Path(path))
    keep = _kept(pack, identities)
    return pack.identity[keep], pack.frontal[keep]


def pack_mode(args) -> dict:
    """Train on ``--packs`` crops, score rank-1 of ``--val-pack``'s profiles (gallery: first frontal per
    person). With ``--people`` once per size of a nested set of training people (the first N
    identity numbers that have a frontal), so the gain can be read against the number of people."""
    paths = args.packs.split(",")  # labels and embeddings are joined in this one order
    labels = [pack_labels(p, args.train_identities) for p in paths]
    ids, front = (np.concatenate([p[k] for p in labels]) for k in range(2))
    overlap = set(ids.tolist()) & set(pack_labels(args.val_pack, "351-400")[0].tolist())
    if overlap:  # the trainer refuses this too: 351-400 are where the epoch is chosen
        raise SystemExit(f"training identities overlap the validation ones: {sorted(overlap)[:5]}")
    people = sorted(set(ids[front].tolist()))
    sizes = args.people or [len(people)]
    if max(sizes) > len(people):
        raise SystemExit(f"--people {max(sizes)}: the packs hold {len(people)} people with a frontal")
    results = {}
    for name in args.embedders:
        parts = [pack_embeddings(p, name, args.train_identities) for p in paths]
        E, Y = (np.concatenate([p[k] for p in parts]) for k in range(2))
        vE, vY, vids, vfront = pack_embeddings(args.val_pack, name, "351-400")
        gal_idx = [int(np.flatnonzero(vfront & (vids == c))[0]) for c in sorted(set(vids[vfront].tolist()))]
        probes = np.flatnonzero(~vfront & np.isin(vids, vids[gal_idx]))

        def rank1(emb):
            return float(np.mean(rank1_hits(emb[probes], vids[probes], emb[gal_idx], vids[gal_idx])))

        def evaluate_fn(model):
            with torch.no_grad():
                return {"rank1": rank1(model(torch.from_numpy(vE), torch.from_numpy(vY)).numpy())}

        base = rank1(vE)
        results[name] = {"raw": base, "probes": len(probes), "by_people": {}}
        for n in sizes:
            x, yaw, target, centres = training_set(E, Y, ids, front, np.isin(ids, people[:n]))
            curves = [train_residual(x, yaw, target, centres, args, seed, evaluate_fn) for seed in range(args.seeds)]
            per_seed = {e: [c[e][0]["rank1"] for c in curves] for e in curves[0]}
            mean = {e: float(np.mean(v)) for e, v in per_seed.items()}
            best = max(mean, key=mean.get)
            print(f"\n{name}: trained on {args.packs} ({len(x)} crops, {len(centres)} people), scored on {len(probes)} "
                  f"profiles of {args.val_pack}; raw rank-1 {100 * base:.1f} %; mean of {args.seeds} seeds\n\n"
                  "| epoch | rank-1 % |\n|---|---|")
            for e in sorted(mean):
                print(f"| {e}{' (best)' if e == best else ''} | {100 * mean[e]:.1f} |")
            results[name]["by_people"][len(centres)] = {
                "curve": mean, "best_epoch": best, "best_per_seed": per_seed[best], "train_crops": len(x)}
        if len(sizes) > 1:
            print(f"\n{name}: rank-1 at the best epoch against the number of training people (raw {100 * base:.1f} %)\n\n"
                  "| people | crops | best epoch | rank-1 % | seeds min-max | errors vs raw |\n|---|---|---|---|---|---|")
            for n, r in results[name]["by_people"].items():
                acc = r["curve"][r["best_epoch"]]
                print(f"| {n} | {r['train_crops']} | {r['best_epoch']} | {100 * acc:.1f} | {100 * min(r['best_per_seed']):.1f}"
                      f"-{100 * max(r['best_per_seed']):.1f} | {100 * ((1 - acc) / (1 - base) - 1):+.0f} % |")
    if args.plot:
        people_plot(results, Path(args.plot), args)
    return results


def people_plot(results: dict, path: Path, args) -> None:
    """Rank-1 at the best epoch against the number of training people, one line per embedder, with
    its raw rank-1 and the frontalizer issue's goal (a third fewer errors than raw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for k, (name, r) in enumerate(results.items()):
        colour = f"C{k}"
        n = sorted(r["by_people"])
        acc = [100 * r["by_people"][m]["curve"][r["by_people"][m]["best_epoch"]] for m in n]
        lo = [100 * min(r["by_people"][m]["best_per_seed"]) for m in n]
        hi = [100 * max(r["by_people"][m]["best_per_seed"]) for m in n]
        ax.plot(n, acc, "o-", color=colour, label=f"{name}: embedding map (band: seeds' range)")
        ax.fill_between(n, lo, hi, color=colour, alpha=0.15)
        ax.axhline(100 * r["raw"], color=colour, ls=":", label=f"{name}: raw")
        ax.axhline(100 * (1 - (1 - r["raw"]) * 2 / 3), color=colour, ls="--", lw=0.8, label=f"{name}: goal (1/3 fewer errors)")
    ax.set_xscale("log")
    sizes = sorted({m for r in results.values() for m in r["by_people"]})
    ax.set_xticks(sizes, [str(m) for m in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training people (the first N identity numbers of the packs)")
    ax.set_ylabel(f"rank-1 %, {next(iter(results.values()))['probes']} validation profiles")
    ax.set_title(f"Pose map on the embedding vs training people\n(train {args.packs}; validation {args.val_pack})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"\nplot: {path}")


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
    ap.add_argument("--lfw", action="store_true",
                    help="also train on LFW's real photos (people with 2+ photos, at most 20 each; frontal: estimated |yaw| <= 15°)")
    ap.add_argument("--packs", default=None, help="train on these packs' crops instead (comma-separated)")
    ap.add_argument("--train-identities", default="", help="--packs: identities to train on (default all; CFP 1-350 at most)")
    ap.add_argument("--val-pack", default=None, help="--packs: the validation pack (CFP 351-400)")
    ap.add_argument("--people", type=int, nargs="+", default=None,
                    help="--packs: train once per number of people (nested: the first N identity numbers)")
    ap.add_argument("--plot", default=None, help="--packs: write rank-1 against the number of people here (PNG)")
    ap.add_argument("--out", default="results/embedding_residual")
    args = ap.parse_args()
    t0 = time.time()
    if not args.packs and (args.people or args.plot):
        ap.error("--people and --plot need --packs")
    if args.packs:
        if not args.val_pack:
            ap.error("--packs needs --val-pack")
        if args.lfw:
            ap.error("--lfw works on photos, not --packs")
        if args.people and min(args.people) < 2:
            ap.error("--people: at least 2 people")
        rec = run_header("embedding_residual", f"packs {args.packs}; validation {args.val_pack}", weights_sha(args.embedders),
                         "train: the packs (CFP 001-350, LFW renders); tune/report: CFP 351-400 validation pack")
        rec.update(results=pack_mode(args), params=vars(args), seconds=round(time.time() - t0, 1))
        save_record(Path(args.out), rec, "embedding_residual_packs")
        return
    root = shared_root(args.shared)
    cfp = root / "data" / "cfp"
    data, split, lfw = f"{cfp}; report-only: {root}/data/cmu_faces", "train CFP 001-350", None
    if args.lfw:
        # Real photos of more people, at the poses LFW has. Every CFP person is left out: 351-400 are
        # where the epoch is chosen, and 001-350 are already here under their CFP number.
        people = [p for p in lfw_people(root / "data" / "lfw", exclude=set(cfp_names(cfp).values())) if len(p) >= 2]
        people = [p[:LFW_MAX_PHOTOS] for p in people]  # a few people have hundreds; the loss is per photo
        lfw = ([q for p in people for q in p], np.array([-1 - k for k, p in enumerate(people) for _ in p]))
        data += (f"; LFW {root}/data/lfw: {len(people)} people with 2+ photos ({len(lfw[0])} photos, at most "
                 f"{LFW_MAX_PHOTOS} each), every CFP person left out")
        split += " + LFW"
    rec = run_header("embedding_residual", data, weights_sha(args.embedders),
                     f"{split}; tune (epoch) CFP 351-400; report CMU Face Images")
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
        if lfw:
            l_emb, l_yaw = embed_paths(lfw[0], name, args.detector, with_yaw=True)
            lE, lY, lok = table(l_emb, l_yaw, lfw[0])
            E, Y, ok = np.concatenate([E, lE]), np.concatenate([Y, lY]), np.concatenate([ok, lok])
            ids = np.concatenate([ids, lfw[1]])
            front = np.concatenate([front, np.abs(lY) <= LFW_FRONTAL])
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
        print(f"\n{name}: trained on {len(x)} photos of {len(centres)} people; validation (CFP 351-400), mean of {args.seeds} seeds; raw rank-1 {100 * base['rank1']:.1f} %, "
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
