"""Research: a door sees a person in several frames — does pooling them help, and at what threshold?

On CFP 351–400 (tuning split; gallery frontal 01 of each of the 50 people), each face embedded
as the library embeds it (``--embedder``, default sface, under its "auto" rule), an event's
embedding is the pooled mean of its faces' (``mean``: plain; ``yaw``: each face weighted by
max(cos |yaw|, 0.1), so a frontal frame counts more than a profile):

* one profile (200 events: every profile),
* two profiles (300 events: every pair of one person's four profiles),
* a profile and a frontal (200 events: profile k with frontal k + 2, k = 0…3 — the gallery's frontal
  01 is never a probe).

Figures: rank-1, DIR at FAR 1 % per probe (threshold from the library's impostor table for a
gallery of 50, plus the rule's shift), and what the pooled events do to impostor scores: every
event of one person against every other person's gallery frontal, the FAR at that threshold, and the
shift that restores single-profile probes' FAR over the same impostor pairs (quantile matching at
FAR 1e-2 and 1e-3, and at the per-comparison rate the gallery threshold is set for). The same events
built from CFP 301–350 are strangers to the gallery: accepted-as-anyone rate (report only).

    python -m research.event_pooling [--embedder sface]
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import embed_paths, run_header, shared_root  # noqa: E402
from benchmarks.frontalization import policy  # noqa: E402
from benchmarks.rotation import embed_renders, fits_of  # noqa: E402

import pifr  # noqa: E402
from pifr.eval.datasets import cfp_images  # noqa: E402
from pifr.policy import rule_for  # noqa: E402
from pifr.gallery import default_operating_point  # noqa: E402

TUNE, STRANGERS = range(351, 401), range(301, 351)


def pooled(vecs, yaws, how):
    w = np.ones(len(vecs)) if how == "mean" else np.array([max(math.cos(math.radians(abs(y))), 0.1) for y in yaws])
    v = (w[:, None] * np.stack(vecs)).sum(0)
    return v / np.linalg.norm(v)


def events(ids, cfp, emb_of, yaws, kind):
    """``[(identity, [paths])]`` of one kind of event for the people ``ids``."""
    fr = {(im.identity, im.index): im.path for im in cfp_images(cfp, ids, "frontal")}
    pr = {}
    for im in cfp_images(cfp, ids, "profile"):
        pr.setdefault(im.identity, []).append(im.path)
    out = []
    for i, ps in sorted(pr.items()):
        ps = [p for p in ps if emb_of(p) is not None]
        if kind == "one profile":
            out += [(i, [p]) for p in ps]
        elif kind == "two profiles":
            out += [(i, list(c)) for c in itertools.combinations(ps, 2)]
        else:
            out += [(i, [p, fr[(i, k + 2)]]) for k, p in enumerate(ps) if (i, k + 2) in fr and emb_of(fr[(i, k + 2)]) is not None]
    return out


def main():
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--embedder", default="sface")
    args = ap.parse_args()
    cfp = shared_root() / "data" / "cfp"
    name = args.embedder
    run_header("event_pooling", f"{cfp} (351-400 tune; 301-350 strangers)", {}, "tune: CFP 351-400; strangers CFP 301-350 (report)")
    imgs = cfp_images(cfp, TUNE) + cfp_images(cfp, STRANGERS)
    raw, yaws = embed_paths([im.path for im in imgs], name, "retinaface", with_yaw=True)
    rule = rule_for(name)
    fits = fits_of([im.path for im in imgs if im.pose == "profile"], "retinaface")
    views = embed_renders(fits, pifr.get_embedder(name), rule.view_yaws, yaws)
    emb = policy(raw, views, yaws, rule.yaw_threshold, rule.fusion_weight)
    gallery = [im for im in cfp_images(cfp, TUNE, "frontal") if im.index == 1]
    G = np.stack([emb(im.path) for im in gallery])
    gid = np.array([im.identity for im in gallery])
    op = default_operating_point(name, len(gallery))
    thr = op.threshold + rule.threshold_shift
    print(f"{name}: gallery {len(gallery)}, threshold {op.threshold:.4f} + rule shift {rule.threshold_shift:+.4f} "
          f"= {thr:.4f} (FAR 1 % per probe; per comparison {op.far_per_comparison:.2e})")
    single_imp = None
    print("| event | pooling | events | rank-1 % | DIR @ FAR 1 % % | impostor FAR/comparison at thr | shift for single's FAR (1e-2 / 1e-3 / gallery rate) | strangers accepted % |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in ("one profile", "two profiles", "profile + frontal"):
        for how in (("mean",) if kind == "one profile" else ("mean", "yaw")):
            ev = events(TUNE, cfp, emb, yaws, kind)
            P = np.stack([pooled([emb(p) for p in ps], [yaws[str(p)] for p in ps], how) for _, ps in ev])
            pid = np.array([i for i, _ in ev])
            S = P @ G.T
            top = S.argmax(1)
            hit = gid[top] == pid
            dir_ = (hit & (S.max(1) >= thr)).mean()
            imp = np.sort(S[pid[:, None] != gid[None]])
            if single_imp is None:
                single_imp = imp
            q = lambda a, f: float(a[min(int(np.ceil((1 - f) * len(a))), len(a) - 1)])  # noqa: E731
            shifts = [q(imp, f) - q(single_imp, f) for f in (1e-2, 1e-3, op.far_per_comparison)]
            sev = events(STRANGERS, cfp, emb, yaws, kind)
            SP = np.stack([pooled([emb(p) for p in ps], [yaws[str(p)] for p in ps], how) for _, ps in sev])
            acc = ((SP @ G.T).max(1) >= thr).mean()
            print(f"| {kind} | {how} | {len(ev)} | {100 * hit.mean():.1f} | {100 * dir_:.1f} | {(imp >= thr).mean():.2e} | "
                  f"{' / '.join(f'{s:+.4f}' for s in shifts)} | {100 * acc:.1f} ({len(sev)}) |")


if __name__ == "__main__":
    main()
