"""Research: several turned views of a probe, averaged, as its second view.

Each view the renderer makes of a profile has its own defects (the frontal one a wedge down the
nose and a mirror seam, a 45° one little of either but a turned face); if they are not the same
defects, their mean embedding should carry the person better than any one view. Test-time
augmentation over poses, as in Pose-TTA (Jung et al., 2025), with the views from pifr's 3D fit.

Protocol and decision, fixed before the first run:

* Candidates: normalise(mean of the unit embeddings of the probe's renders at each angle of a set
  S, on the probe's own side), fused with raw as the "auto" rules fuse (|yaw| > T, weight w);
  S in {0, 15, 30, 45}, {15, 30, 45}, {30, 45, 50}; T in 30, 45, 60; w in 0.25, 0.5, 0.75, 1.
* Step 1, CFP 351–400 (200 profile probes, gallery frontal 01): the best cell per embedder —
  lowest exact McNemar p against the rule in force (``AUTO_RULES``; raw for an embedder without
  one), among cells that gain more
  probes than they lose.
* Step 2, LFW DevTrain turned (``research/lfw_turned.py``'s protocol: 1,184 people, probes past
  30°): that one cell against the rule in force.
* It replaces the rule only if it gains on LFW (gained > lost, or both zero), the McNemar test
  on CFP's and LFW's discordant counts summed gives p < 0.05, and it does not lose on CMU
  (report-only set).

    python -m research.view_ensemble [--embedders dlib_resnet mobilefacenet]

First run at 524de5c, against the rules then in force (dlib_resnet: the frontal render, |yaw| >
45°, w 0.25); its result, which made dlib's pooled rule the one in force, is in research/LOG.md.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import embed_paths, parser, run_header, shared_root  # noqa: E402
from benchmarks.frontalization import cfp_hits, cmu_hits, policy, tuning_protocol  # noqa: E402
from research.lfw_turned import devtrain_people, hits as lfw_hits, protocol as lfw_protocol  # noqa: E402
from benchmarks.rotation import embed_renders, fits_of  # noqa: E402

from pifr.embedders import get_embedder  # noqa: E402
from pifr.eval.metrics import mcnemar  # noqa: E402
from pifr.policy import AutoRule, shipped_rules  # noqa: E402
from pifr.pooling import pool_views  # noqa: E402
AUTO_RULES = shipped_rules().by_embedder()  # the shipped rules, read only

SETS = ((0.0, 15.0, 30.0, 45.0), (15.0, 30.0, 45.0), (30.0, 45.0, 50.0))
THRESHOLDS = (30.0, 45.0, 60.0)
WEIGHTS = (0.25, 0.5, 0.75, 1.0)


def mean_view(views, angles):
    """``{path: the views at angles pooled as "auto" pools them}``; None where any is None."""
    out = {}
    for p in views[angles[0]]:
        es = [views[a][p] for a in angles]
        out[p] = None if any(e is None for e in es) else pool_views(np.stack(es))
    return out


def label(angles):
    return "{" + ", ".join(f"{a:g}" for a in angles) + "}°"


def main():
    ap = parser(__doc__, "results/view_ensemble")
    ap.add_argument("--propose", default=None, help="write the shipped rules with every adopted rule replaced to this "
                                                    "file (pifr.policy's format; a maintainer copies it to pifr/data/auto_rules.json)")
    args = ap.parse_args()
    proposal = shipped_rules()
    root = shared_root(args.shared)
    header = run_header("view_ensemble", f"{root}/data/cfp (351-400), {root}/data/lfw (peopleDevTrain); report-only: CMU",
                     {}, "tune (CFP 351-400, LFW DevTrain people)")
    _, _, _, gallery, probes, every, cmu, cmu_paths = tuning_protocol(root)
    cfp_fits = fits_of([im.path for im in probes] + list(cmu_paths), args.detector)
    lfw = root / "data" / "lfw"
    people = devtrain_people(lfw)
    lfw_every = [p for ps in people.values() for p in ps]
    lfw_fits = None
    angles = sorted({a for s in SETS for a in s})
    for name in args.embedders:
        # An embedder without a rule (as mobilefacenet_casia was at the first run): raw is in force.
        emb, rule = get_embedder(name), AUTO_RULES.get(name, AutoRule(90.0, 0.0))
        raw, yaws = embed_paths(every + cmu_paths, name, args.detector, with_yaw=True)
        views = {a: embed_renders(cfp_fits, emb, a, yaws) for a in angles}
        rule_view = embed_renders(cfp_fits, emb, rule.view_yaws, yaws)
        in_force = cfp_hits(policy(raw, rule_view, yaws, rule.yaw_threshold, rule.fusion_weight), gallery, probes)
        print(f"\n{name}: raw {100 * cfp_hits(lambda p: raw[str(p)], gallery, probes).mean():.1f} %, rule in force "
              f"(±{label(rule.view_yaws)}, |yaw| > {rule.yaw_threshold:g}, w {rule.fusion_weight:g}) {100 * in_force.mean():.1f} %")
        print("| views | |yaw| > | w | CFP rank-1 % | vs rule +/−, p |\n|---|---|---|---|---|")
        best = None
        for s in SETS:
            mv = mean_view(views, s)
            for t in THRESHOLDS:
                for w in WEIGHTS:
                    h = cfp_hits(policy(raw, mv, yaws, t, w), gallery, probes)
                    m = mcnemar(in_force, h)
                    print(f"| {label(s)} | {t:g} | {w:g} | {100 * h.mean():.1f} | +{m.gained} / −{m.lost}, {m.p_value:.3f} |")
                    key = (m.p_value if m.gained > m.lost else 2.0, -h.mean())
                    if best is None or key < best[0]:
                        best = (key, s, t, w, m, h)
        _, s, t, w, m_cfp, h_cfp = best
        print(f"step 1, best on CFP: {label(s)}, |yaw| > {t:g}, w {w:g}: +{m_cfp.gained} / −{m_cfp.lost}, p {m_cfp.p_value:.4f}")

        c_rule = cmu_hits(policy(raw, rule_view, yaws, rule.yaw_threshold, rule.fusion_weight), cmu)[0]
        c_best = cmu_hits(policy(raw, mean_view(views, s), yaws, t, w), cmu)[0]
        m_cmu = mcnemar(c_rule, c_best)
        print(f"CMU (report only): rule {100 * c_rule.mean():.1f} → {100 * c_best.mean():.1f} % "
              f"(+{m_cmu.gained} / −{m_cmu.lost})")

        l_raw, l_yaws = embed_paths(lfw_every, name, args.detector, select="center", with_yaw=True)
        l_gallery, l_probes = lfw_protocol(people, l_raw, l_yaws, 30.0)
        if lfw_fits is None:
            lfw_fits = fits_of(sorted({p for p, _ in l_probes}), args.detector, select="center")
        l_views = {a: embed_renders(lfw_fits, emb, a, l_yaws) for a in s}
        l_rule = lfw_hits(policy(l_raw, embed_renders(lfw_fits, emb, rule.view_yaws, l_yaws), l_yaws, rule.yaw_threshold, rule.fusion_weight), l_gallery, l_probes)
        l_best = lfw_hits(policy(l_raw, mean_view(l_views, s), l_yaws, t, w), l_gallery, l_probes)
        m_lfw = mcnemar(l_rule, l_best)
        pooled = mcnemar(np.r_[in_force, l_rule], np.r_[h_cfp, l_best])  # both sets' discordant probes together
        print(f"step 2, LFW DevTrain turned ({len(l_probes)} probes, gallery {len(l_gallery)}): rule "
              f"{100 * l_rule.mean():.1f} → {100 * l_best.mean():.1f} % (+{m_lfw.gained} / −{m_lfw.lost}, p {m_lfw.p_value:.4f}); "
              f"CFP + LFW pooled +{pooled.gained} / −{pooled.lost}, p {pooled.p_value:.4f}")
        adopt = (m_lfw.gained > m_lfw.lost or m_lfw.gained == m_lfw.lost == 0) and pooled.p_value < 0.05 \
            and pooled.gained > pooled.lost and m_cmu.lost <= m_cmu.gained
        print(f"decision: {'replaces' if adopt else 'does not replace'} the rule in force")
        if adopt:
            # The shift is the rule in force's until research/auto_threshold.py measures the new one.
            new = AutoRule(float(t), float(w), rule.threshold_shift, view_yaws=tuple(s),
                           event_threshold_shift=rule.event_threshold_shift)
            proposal = proposal.with_rule(
                name, ["3d", "refined"], new, split="tune: CFP 351-400 (200 profile probes, gallery frontal 01), "
                "LFW DevTrain turned photos; CMU report only", chosen_by=f"python -m research.view_ensemble --embedders {name} "
                f"(run at {header['commit']})", figures=f"CFP rank-1 {100 * in_force.mean():.1f} -> {100 * h_cfp.mean():.1f} % "
                f"(+{m_cfp.gained} / -{m_cfp.lost}, p {m_cfp.p_value:.4f}); LFW DevTrain {100 * l_rule.mean():.1f} -> "
                f"{100 * l_best.mean():.1f} %; both sets +{pooled.gained} / -{pooled.lost}, p {pooled.p_value:.4f}; CMU "
                f"{100 * c_rule.mean():.1f} -> {100 * c_best.mean():.1f} %", shift_by="the rule in force's: measure it "
                f"(python -m research.auto_threshold {name})")
    if args.propose:
        proposal.save(args.propose)
        print(f"proposed rules written to {args.propose}")


if __name__ == "__main__":
    main()
