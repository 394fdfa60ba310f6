"""Research: turn a profile probe only part of the way to the front. A render at ±15–45° keeps more
of what the photo saw and less mirror fill than the frontal render; is its embedding, fused with
raw, a better probe than the frontal render's (the "auto" floor)? ``--refined`` scores the same views through the
registered refiner too. CFP 351–400 (tuning split),
gallery frontal 01, 200 profile probes; CMU Face Images reported for the best rule only.

    python -m research.partial_turn [--embedders dlib_resnet mobilefacenet]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import embed_paths, parser, run_header, shared_root  # noqa: E402
from benchmarks.frontalization import cfp_hits, cmu_hits, policy, tuning_protocol  # noqa: E402
from benchmarks.rotation import embed_renders, fits_of  # noqa: E402

from pifr.embedders import get_embedder  # noqa: E402
from pifr.eval.metrics import mcnemar  # noqa: E402
from pifr.policy import shipped_rules  # noqa: E402
AUTO_RULES = shipped_rules().by_embedder()  # the shipped rules, read only

TURN_TO = (0.0, 15.0, 30.0, 45.0)


def refined_views(fits, emb, to, yaws):
    """Embedding of each face's render at ±``to`` (its own side) through the registered refiner."""
    import math

    from pifr.alignment import TPGAN_128
    from pifr.views import to_template
    from pifr.refinement import get_refiner
    from pifr.rotation import render_pose

    ref, out = get_refiner(), {}
    items = [(p, v) for p, v in fits.items() if v is not None]
    out.update({p: None for p, v in fits.items() if v is None})
    for i in range(0, len(items), 32):
        chunk = items[i:i + 32]
        rs = [render_pose(v[2], v[0], math.copysign(to, yaws.get(p, 0.0) or 1.0), template=TPGAN_128) for p, v in chunk]
        crops = np.stack([to_template(im, emb.template) for im in ref.refine_rotated(rs)])
        out.update(dict(zip([p for p, _ in chunk], emb.embed_crops(crops))))
    return out


def main():
    ap = parser(__doc__, "results/partial_turn")
    ap.add_argument("--refined", action="store_true", help="score the views through the registered refiner too")
    ap.add_argument("--turn-to", type=float, nargs="+", default=list(TURN_TO), help="target |yaw| of the probe's render (0 = the floor's frontal render, always included)")
    args = ap.parse_args()
    turn_to = sorted({0.0, *args.turn_to})
    root = shared_root(args.shared)
    rec = run_header("partial_turn", f"{root}/data/cfp (351-400); report-only: CMU", {}, "tune (CFP 351-400)")
    print(rec)
    pairs, ff_pairs, frontals, gallery, probes, every, cmu, cmu_paths = tuning_protocol(root)
    probe_paths = [im.path for im in probes] + list(cmu_paths)
    fits = fits_of(probe_paths, args.detector)
    for name in args.embedders:
        emb = get_embedder(name)
        raw, yaws = embed_paths(every + cmu_paths, name, args.detector, with_yaw=True)
        rule = AUTO_RULES[name]
        views = {to: embed_renders(fits, emb, to, yaws) for to in turn_to}
        rule_view = embed_renders(fits, emb, rule.view_yaws, yaws)
        if args.refined:
            views.update({-to - 1000: refined_views(fits, emb, to, yaws) for to in turn_to})  # keys < 0: refined
        floor = cfp_hits(policy(raw, rule_view, yaws, rule.yaw_threshold, rule.fusion_weight), gallery, probes)
        print(f"\n{name}: raw {100 * cfp_hits(lambda p: raw[str(p)], gallery, probes).mean():.1f} %, "
              f"floor (the \"auto\" rule: view at ±{'/'.join(f'{a:g}' for a in rule.view_yaws)}°, |yaw|>{rule.yaw_threshold:g} w {rule.fusion_weight:g}) {100 * floor.mean():.1f} %")
        print("| turn to | |yaw| > | w | rank-1 % | vs floor +/−, p |\n|---|---|---|---|---|")
        best = None
        for to in [k for k in views if k in turn_to or k < 0]:
            for t in (30.0, 45.0, 60.0):
                for w in (0.25, 0.5, 0.75, 1.0):
                    h = cfp_hits(policy(raw, views[to], yaws, t, w), gallery, probes)
                    m = mcnemar(floor, h)
                    print(f"| {'refined ' if to < 0 else ''}{(-to - 1000) if to < 0 else to:g}° | {t:g} | {w:g} | {100 * h.mean():.1f} | +{m.gained} / −{m.lost}, {m.p_value:.3f} |")
                    key = (m.p_value if m.gained > m.lost else 2.0, -h.mean())
                    if best is None or key < best[0]:
                        best = (key, to, t, w)
        _, to, t, w = best
        c_floor = cmu_hits(policy(raw, rule_view, yaws, rule.yaw_threshold, rule.fusion_weight), cmu)
        c_best = cmu_hits(policy(raw, views[to], yaws, t, w), cmu)
        m = mcnemar(c_floor[0], c_best[0])
        label = f"refined {-to - 1000:g}°" if to < 0 else f"{to:g}°"
        print(f"best: turn to {label}, |yaw|>{t:g}, w {w:g}; CMU floor {100 * c_floor[0].mean():.1f} → "
              f"{100 * c_best[0].mean():.1f} % (+{m.gained} / −{m.lost}, p {m.p_value:.3f})")


if __name__ == "__main__":
    main()
