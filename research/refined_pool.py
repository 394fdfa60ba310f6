"""Research: the pooled views of "auto" passed through the shipped refiner first.

The refiner helped dlib_resnet read a part-turned render (a ±45° view alone: 79.5 % plain, 83.0 %
refined, research/LOG.md), and "auto" now pools renders at ±15/30/45° for dlib_resnet. Do refined
renders make a better pool? The refiner costs ~76 ms a view on one CPU thread, so a pool of three
would add ~0.2 s to every fused face: it has to earn that.

Protocol and decision, fixed before the first run:

* Candidates: the rule in force (``AUTO_RULES``) with its views refined (the renders made in the
  refiner's TP-GAN crop, refined, moved to the embedder's template, as ``frontal_view("refined")``
  does), at the rule's |yaw| threshold and w in {the rule's, 0.75}.
* Step 1, CFP 351–400 (200 profiles, gallery frontal 01): the candidate with the lowest exact
  McNemar p against the rule in force, among those that gain more than they lose.
* Step 2, LFW DevTrain turned (``research/lfw_turned.py``'s protocol): that candidate against the
  rule in force.
* It would replace the plain views only if it gains on LFW, the two sets' discordant probes
  together give p < 0.05, and CMU does not lose.

    python -m research.refined_pool [--embedders dlib_resnet]
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks._harness import embed_paths, parser, run_header, shared_root  # noqa: E402
from benchmarks.frontalization import cfp_hits, cmu_hits, policy, tuning_protocol  # noqa: E402
from research.lfw_turned import devtrain_people, hits as lfw_hits, protocol as lfw_protocol  # noqa: E402
from benchmarks.rotation import embed_renders, fits_of  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pifr.embedders import get_embedder  # noqa: E402
from pifr.eval.metrics import mcnemar  # noqa: E402
from pifr.policy import shipped_rules  # noqa: E402
from pifr.pooling import pool_views  # noqa: E402
from pifr.views import RefinedRender3D  # noqa: E402
AUTO_RULES = shipped_rules().by_embedder()  # the shipped rules, read only


def refined_pool(fits, emb, rule, yaws):
    """``{path: pooled embedding of the refined renders at ±rule.view_yaws}`` (None without a fit)."""
    view, out = RefinedRender3D(), {}
    for p, v in tqdm(fits.items(), desc=f"refined views [{emb.name}]"):
        if v is None or not abs(yaws.get(p, 0.0)) > rule.yaw_threshold:
            out[p] = None
            continue
        img, face, _ = v
        side = 1.0 if (yaws.get(p, 0.0) or 1.0) > 0 else -1.0
        out[p] = pool_views(emb.embed_crops(view.view_crops(img, face, emb.template, [side * a for a in rule.view_yaws])))
    return out


def main():
    ap = parser(__doc__, "results/refined_pool")
    args = ap.parse_args()
    root = shared_root(args.shared)
    print(run_header("refined_pool", f"{root}/data/cfp (351-400), {root}/data/lfw (peopleDevTrain); report-only: CMU",
                     {}, "tune (CFP 351-400, LFW DevTrain people)"))
    _, _, _, gallery, probes, every, cmu, cmu_paths = tuning_protocol(root)
    fits = fits_of([im.path for im in probes] + list(cmu_paths), args.detector)
    people = devtrain_people(root / "data" / "lfw")
    lfw_every = [p for ps in people.values() for p in ps]
    for name in args.embedders:
        emb, rule = get_embedder(name), AUTO_RULES[name]
        raw, yaws = embed_paths(every + cmu_paths, name, args.detector, with_yaw=True)
        plain = embed_renders(fits, emb, rule.view_yaws, yaws)
        refined = refined_pool(fits, emb, rule, yaws)
        t = rule.yaw_threshold
        in_force = cfp_hits(policy(raw, plain, yaws, t, rule.fusion_weight), gallery, probes)
        print(f"\n{name}: rule in force (views ±{'/'.join(f'{a:g}' for a in rule.view_yaws)}°, |yaw| > {t:g}, "
              f"w {rule.fusion_weight:g}) {100 * in_force.mean():.1f} %; refined views alone "
              f"{100 * cfp_hits(policy(raw, refined, yaws, t, 1.0), gallery, probes).mean():.1f} %")
        best = None
        for w in sorted({rule.fusion_weight, 0.75}):
            h = cfp_hits(policy(raw, refined, yaws, t, w), gallery, probes)
            m = mcnemar(in_force, h)
            print(f"refined, w {w:g}: {100 * h.mean():.1f} % (+{m.gained} / −{m.lost}, p {m.p_value:.4f})")
            key = m.p_value if m.gained > m.lost else 2.0
            if best is None or key < best[0]:
                best = (key, w, m, h)
        _, w, m_cfp, h_cfp = best
        c_rule = cmu_hits(policy(raw, plain, yaws, t, rule.fusion_weight), cmu)[0]
        c_new = cmu_hits(policy(raw, refined, yaws, t, w), cmu)[0]
        m_cmu = mcnemar(c_rule, c_new)
        print(f"step 1: w {w:g}; CMU (report only) {100 * c_rule.mean():.1f} → {100 * c_new.mean():.1f} % (+{m_cmu.gained} / −{m_cmu.lost})")
        l_raw, l_yaws = embed_paths(lfw_every, name, args.detector, select="center", with_yaw=True)
        l_gallery, l_probes = lfw_protocol(people, l_raw, l_yaws, 30.0)
        l_fits = fits_of(sorted({p for p, _ in l_probes if abs(l_yaws[p]) > t}), args.detector, select="center")
        l_rule = lfw_hits(policy(l_raw, embed_renders(l_fits, emb, rule.view_yaws, l_yaws), l_yaws, t, rule.fusion_weight), l_gallery, l_probes)
        l_new = lfw_hits(policy(l_raw, refined_pool(l_fits, emb, rule, l_yaws), l_yaws, t, w), l_gallery, l_probes)
        m_lfw = mcnemar(l_rule, l_new)
        both = mcnemar(np.r_[in_force, l_rule], np.r_[h_cfp, l_new])
        print(f"step 2, LFW DevTrain turned ({len(l_probes)}): {100 * l_rule.mean():.1f} → {100 * l_new.mean():.1f} % "
              f"(+{m_lfw.gained} / −{m_lfw.lost}); both sets +{both.gained} / −{both.lost}, p {both.p_value:.4f}")
        adopt = m_lfw.gained > m_lfw.lost and both.gained > both.lost and both.p_value < 0.05 and m_cmu.lost <= m_cmu.gained
        print(f"decision: the refined pool {'replaces' if adopt else 'does not replace'} the plain one")


if __name__ == "__main__":
    main()
