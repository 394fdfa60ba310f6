"""Gallery benchmarks.

1. Open-set identification on CFP (report split): gallery = frontal 01 of identities 001–300;
   probes = all profiles of 001–300 (enrolled) and of 301–350 (not enrolled). Thresholds
   calibrated on the tuning split only — impostor scores among CFP 351–400 images (profile vs
   frontal of different people) — for target FAR 1 % and 0.1 %. Reports DIR (rank-1 correct and
   accepted) and the FAR measured on the non-enrolled probes.
2. identify() latency against gallery size with synthetic unit embeddings (search only), numpy
   versus faiss, to set FAISS_MIN_TEMPLATES.

    python benchmarks/gallery.py [--embedders dlib_resnet mobilefacenet] [--sizes 1000 10000 100000 1000000]
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from _harness import parser, save_record, device_description, embed_paths, run_header, shared_root, weights_sha

import pifr.gallery as G
from pifr.eval.datasets import cfp_images


def open_set(cfp: Path, name: str, detector: str) -> dict:
    imgs = cfp_images(cfp)
    embs = embed_paths([im.path for im in imgs], name, detector)
    ok = lambda im: embs[str(im.path)] is not None  # noqa: E731
    gal = [im for im in imgs if im.identity <= 300 and im.pose == "frontal" and im.index == 1 and ok(im)]
    enrolled = [im for im in imgs if im.identity <= 300 and im.pose == "profile"]
    strangers = [im for im in imgs if 301 <= im.identity <= 350 and im.pose == "profile"]
    tune = [im for im in imgs if im.identity >= 351 and ok(im)]
    g = G.Gallery(name)
    for im in gal:
        g.add_embeddings(f"{im.identity:03d}", embs[str(im.path)][None])
    # Impostor scores on the tuning identities: each profile against the frontals of other people.
    tp = np.stack([embs[str(im.path)] for im in tune if im.pose == "profile"])
    tpl = np.array([im.identity for im in tune if im.pose == "profile"])
    tf = np.stack([embs[str(im.path)] for im in tune if im.pose == "frontal"])
    tfl = np.array([im.identity for im in tune if im.pose == "frontal"])
    sims = tp @ tf.T
    impostors = sims[tpl[:, None] != tfl[None, :]]
    res = {"gallery": len(gal), "enrolled_probes": len(enrolled), "stranger_probes": len(strangers), "impostor_scores": int(impostors.size)}
    zero = np.zeros(g.dim, np.float32)
    for far in (1e-2, 1e-3):
        thr = g.calibrate(far, impostors)  # per probe, for this gallery's size
        hits = sum(1 for im in enrolled if ok(im) and (m := g.search_embedding(embs[str(im.path)])[0]).accepted
                   and m.identity == f"{im.identity:03d}")
        false = sum(1 for im in strangers if g.search_embedding(embs[str(im.path)] if ok(im) else zero)[0].accepted)
        res[f"far_{far:g}"] = {"threshold": thr, "dir": hits / len(enrolled), "measured_far": false / len(strangers)}
    return res


def latency(sizes, dim: int = 128, queries: int = 200) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        g = G.Gallery("mobilefacenet")  # search cost depends only on the 128-d templates, not the network
        e = rng.normal(size=(n, dim)).astype(np.float32)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        g.add_embeddings([f"id{i // 2}" for i in range(n)], e)  # two templates per identity, in one bulk call
        q = rng.normal(size=(queries, dim)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        row = {}
        for mode, thr in (("numpy", 10**12), ("faiss", 0)):
            G.FAISS_MIN_TEMPLATES = thr
            g.search_embedding(q[0], k=5)  # warm (builds the faiss index once)
            t = time.perf_counter()
            for v in q:
                g.search_embedding(v, k=5)
            row[mode] = 1000 * (time.perf_counter() - t) / queries
        out[n] = row
    G.FAISS_MIN_TEMPLATES = 1_000_000
    return out


def main() -> None:
    ap = parser(__doc__, "results/gallery")
    ap.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000, 100000, 1000000])
    args = ap.parse_args()
    cfp = shared_root(args.shared) / "data" / "cfp"
    rec = run_header("gallery", str(cfp), weights_sha(args.embedders),
                     "report: CFP 001-300 enrolled, 301-350 strangers; tune: thresholds from CFP 351-400 impostors")
    res = {}
    print("\n| embedder | target FAR | threshold | DIR (rank-1 & accepted) | measured FAR on strangers |\n|---|---|---|---|---|")
    for name in args.embedders:
        r = open_set(cfp, name, args.detector)
        res[name] = r
        for far in (1e-2, 1e-3):
            x = r[f"far_{far:g}"]
            print(f"| {name} | {far:g} | {x['threshold']:.4f} | {100 * x['dir']:.1f} % | {100 * x['measured_far']:.2f} % |")
    print(f"\n(gallery {r['gallery']} identities; {r['enrolled_probes']} enrolled and {r['stranger_probes']} stranger profile probes;"
          f" {r['impostor_scores']} tuning impostor scores)")
    lat = latency(args.sizes)
    print(f"\nidentify() search latency, k=5, 2 templates/identity ({device_description()}):\n\n| templates | numpy ms | faiss ms |\n|---|---|---|")
    for n, row in lat.items():
        print(f"| {n:,} | {row['numpy']:.2f} | {row['faiss']:.2f} |")
    rec.update(results=res, latency_ms=lat)
    save_record(Path(args.out), rec, "gallery")


if __name__ == "__main__":
    main()
