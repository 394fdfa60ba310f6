"""Build a training pack (aligned TP-GAN crops + landmarks + yaw + identity in one .npz).

    python -m pifr.train.pack --cfp ../shared/data/cfp --identities 1-350 --out packs/cfp_train.npz
    python -m pifr.train.pack --multipie /data/multipie --setting 1 --out packs/mpie_s1_train.npz
    python -m pifr.train.pack --render-cfp ../shared/data/cfp --identities 1-350 --model3d model3Ddlib.mat --out packs/render_train.npz
    python -m pifr.train.pack --render-lfw ../shared/data/lfw --lfw-people 2000 --exclude-cfp ../shared/data/cfp --render-target photo --render-background fill --model3d model3Ddlib.mat --out packs/render_lfw.npz
    python -m pifr.train.pack --rotate-and-render ../shared/data/lfw ../shared/data/cfp --identities 1-350 --rotations 2 --out packs/rr.npz
    python -m pifr.train.pack --merge packs/render_lfw.npz packs/render_fill.npz --quality 80 --out carry/renders.npz
    python -m pifr.train.pack --rr-subset packs/rr.npz --max-photos 1800 --rotations 1 --out carry/rr_small.npz

Needs the inference stack (detector and yaw weights); the resulting file is all training needs.
``--merge`` joins packs into one (``Pack.concat``), optionally re-encoded at a lower JPEG quality
and cut to a random subset of identities, to carry to a machine with a size limit (the device
tool takes 64 MiB of working tree).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import List, Tuple

from .data import LFW_IDENTITY_BASE, build_pack, cfp_items, identity_range, multipie_items

log = logging.getLogger("pifr")


def lfw_sources(args: argparse.Namespace, train_ids: range) -> Tuple[List[Tuple[str, int]], dict]:
    """(path, identity) of the first photo of each chosen LFW person, and the pack manifest."""
    import numpy as np

    from ..eval.datasets import cfp_names, lfw_people

    all_people = lfw_people(Path(args.render_lfw))
    everyone = [p[0].parent.name for p in all_people]
    number = {name: LFW_IDENTITY_BASE + i for i, name in enumerate(everyone)}
    exclude = set()
    if args.exclude_cfp:
        exclude = {n for i, n in cfp_names(Path(args.exclude_cfp)).items() if i not in train_ids}
    people = [p for p in all_people if p[0].parent.name not in exclude]
    if args.lfw_people and args.lfw_people < len(people):
        pick = np.random.default_rng(0).choice(len(people), args.lfw_people, replace=False)
        people = [people[i] for i in sorted(pick)]
    excluded = sorted(exclude & set(everyone))
    log.info("LFW: %d people chosen; %d left out as CFP identities outside %s", len(people), len(excluded), args.identities)
    items = [(str(p[0]), number[p[0].parent.name]) for p in people]
    manifest = {"source": "LFW first photos rendered at known yaws", "root": args.render_lfw, "people": len(items),
                "identity_numbers": f"{LFW_IDENTITY_BASE} + index of the name among all LFW people",
                "excluded_cfp_people": excluded, "split": f"train (LFW; CFP people outside {args.identities} removed)"
                if args.exclude_cfp else "train (LFW; NOT checked against CFP validation people)"}
    return items, manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pifr.train.pack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--cfp", help="CFP root (Data/Images/<id>/...)")
    src.add_argument("--multipie", help="Multi-PIE root (session0S/multiview/...)")
    src.add_argument("--merge", nargs="+", metavar="PACK", help="join existing packs into one (see --quality, --sample-identities)")
    src.add_argument("--rotate-and-render", nargs="+", metavar="ROOT",
                     help="CFP and/or LFW roots: rotate-and-render pairs from every photo (pifr.train.render_pairs); "
                          "CFP people outside --identities and their LFW folders are left out")
    src.add_argument("--rr-subset", metavar="PACK", help="a rotate-and-render pack cut to --max-photos photos and at most "
                                                      "--rotations of each one's rotations, to carry (no re-encoding)")
    src.add_argument("--render-cfp", help="CFP root: render its frontals at --yaws with the 3D head (pixel-exact pairs)")
    src.add_argument("--render-lfw", help="LFW root: render each person's first photo at --yaws (pixel-exact pairs); "
                                          f"identities are {LFW_IDENTITY_BASE} + the person's index in name order")
    # No ±90: a frontal photo holds almost none of the side of the head, and renders there are smeared texture.
    ap.add_argument("--yaws", type=float, nargs="+", default=[-75, -60, -45, -30, 30, 45, 60, 75])
    ap.add_argument("--frontals-per-identity", type=int, default=2)
    ap.add_argument("--render-background", default="black", choices=["black", "fill"],
                    help="surround of the rendered inputs: black as rendered, or the face's edge colours spread and blurred")
    ap.add_argument("--render-landmarks", default="projected", choices=["projected", "detected"],
                    help="landmarks that crop each render: the reference head's own, turned with it, or the "
                         "detector's, found on the render as at inference on a real profile")
    ap.add_argument("--render-depth-scales", type=float, nargs="+", default=[1.0],
                    help="head shapes for the renders: the reference head stretched front to back by each "
                         "factor, one per source photo in turn (e.g. 0.85 1.0 1.15)")
    ap.add_argument("--render-target", default="render", choices=["render", "photo"],
                    help="frontal target of rendered pairs: the 0° render (face only) or the aligned photo itself")
    ap.add_argument("--lfw-people", type=int, default=0, help="render this many LFW people (seeded random choice; 0 = all)")
    ap.add_argument("--exclude-cfp", default=None,
                    help="CFP root: leave out LFW people who are CFP identities outside --identities (validation people)")
    ap.add_argument("--max-source-yaw", type=float, default=None,
                    help="skip source photos turned further than this (degrees; default 15 for LFW, no limit for CFP)")
    ap.add_argument("--model3d", default=None, help="model3Ddlib.mat (else $PIFR_WEIGHTS_DIR)")
    ap.add_argument("--identities", default="1-350", help="CFP identity range (CFP 351-400 are validation only)")
    ap.add_argument("--setting", type=int, default=1, help="Multi-PIE setting (1 or 2)")
    ap.add_argument("--part", default="train", choices=["train", "test"])
    ap.add_argument("--detector", default="retinaface")
    ap.add_argument("--quality", type=int, default=None,
                    help="re-encode every crop at this JPEG quality (any source; else 95, or unchanged with --merge)")
    ap.add_argument("--max-frontal-photos", type=int, default=0,
                    help="--merge: keep only each identity's first N frontal photos (identity-level targets; "
                         "renders and their photo targets are kept); 0 = all")
    ap.add_argument("--sample-identities", type=int, default=0,
                    help="--merge: keep every record of this many identities, chosen at random (seed 0); 0 = all")
    ap.add_argument("--rotations", type=int, default=2, help="--rotate-and-render: rotations per photo")
    ap.add_argument("--rr-back", default="texture", choices=["texture", "mirror"],
                    help="--rotate-and-render: the render back takes the rotated view's colours as a texture (R&R) or "
                         "as a photo with a visibility test and mirror fill (the defects of a frontal render of a profile)")
    ap.add_argument("--rr-away", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                    help="--rotate-and-render: turn away by MIN-MAX degrees (default R&R's 20 55)")
    ap.add_argument("--rr-limit", type=float, default=None, help="--rotate-and-render: never turn past this yaw (default 69)")
    ap.add_argument("--max-photos", type=int, default=0, help="--rotate-and-render: a seeded random subset of photos (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.merge:
        return merge(args)
    if args.rr_subset:
        from .render_pairs import RenderPairPack

        pack = RenderPairPack.load(Path(args.rr_subset)).subset(args.max_photos, args.rotations, args.seed)
        pack.save(Path(args.out))
        print(json.dumps({"photos": int(len(pack.yaw)), "pairs": len(pack), "mib": round(Path(args.out).stat().st_size / 2**20, 2)}))
        return 0
    ids = identity_range(args.identities)
    if ids is None:
        ap.error("--identities must be a range such as 1-350")
    if args.rotate_and_render:
        return _render_pairs(args, ids)
    if args.render_cfp or args.render_lfw:
        from .data import build_synthetic_pack

        if args.render_cfp:
            from ..eval.datasets import cfp_images

            frontals = [(str(im.path), im.identity) for im in cfp_images(Path(args.render_cfp), ids, "frontal")
                        if im.index <= args.frontals_per_identity]
            manifest = {"source": "CFP frontals rendered at known yaws", "identities": args.identities}
            max_yaw = args.max_source_yaw
        else:
            frontals, manifest = lfw_sources(args, ids)
            max_yaw = 15.0 if args.max_source_yaw is None else args.max_source_yaw
        pack = build_synthetic_pack(frontals, args.yaws, manifest, model_path=args.model3d,
                                    target=args.render_target, background=args.render_background, max_source_yaw=max_yaw,
                                    landmarks=args.render_landmarks, detector=args.detector,
                                    depth_scales=args.render_depth_scales)
        return _save(pack, args)
    if args.cfp:
        items = cfp_items(Path(args.cfp), ids)
        manifest = {"source": "CFP", "root": args.cfp, "identities": args.identities,
                    "split": "train" if ids.stop <= 351 else "validation/tune" if ids.start >= 351 else "MIXED (check!)"}
    else:
        items = multipie_items(Path(args.multipie), args.setting, args.part)
        manifest = {"source": "Multi-PIE", "root": args.multipie, "setting": args.setting, "part": args.part}
    return _save(build_pack(items, manifest, detector=args.detector), args)


def _render_pairs(args: argparse.Namespace, ids: range) -> int:
    import numpy as np

    from .render_pairs import TurnRecipe, build, photo_sources

    sources = photo_sources([Path(r) for r in args.rotate_and_render], ids)
    if args.max_photos and args.max_photos < len(sources):
        pick = np.sort(np.random.default_rng(args.seed).choice(len(sources), args.max_photos, replace=False))
        sources = [sources[i] for i in pick]
    manifest = {"source": "rotate-and-render pairs", "roots": args.rotate_and_render, "cfp_identities": args.identities,
                "split": f"train (CFP {args.identities} and LFW without the other CFP people)", "rotations_per_photo": args.rotations}
    recipe = TurnRecipe()
    if args.rr_away:
        recipe = replace(recipe, away_range=(min(args.rr_away), max(args.rr_away)))
    if args.rr_limit is not None:
        recipe = replace(recipe, away_limit=args.rr_limit)
    pack = build(sources, rotations=args.rotations, seed=args.seed, quality=args.quality or 90, detector=args.detector, back=args.rr_back,
                 manifest=manifest, recipe=recipe)
    pack.save(Path(args.out))
    size = Path(args.out).stat().st_size
    print(json.dumps({k: v for k, v in pack.manifest.items()} | {"mib": round(size / 2**20, 2)}))
    return 0


def _save(pack, args: argparse.Namespace) -> int:
    """A newly built pack, re-encoded at ``--quality`` when given (else the packs' JPEG 95), saved."""
    if args.quality:
        pack = pack.reencoded(args.quality)
    pack.save(Path(args.out))
    print(json.dumps({k: v for k, v in pack.manifest.items() if k != "skipped_examples"}))
    return 0


def merge(args: argparse.Namespace) -> int:
    import numpy as np

    from .data import Pack

    pack = Pack.concat([Pack.load(Path(p)) for p in args.merge])
    if len(args.merge) > 1:
        pack.manifest["merged_from"] = list(args.merge)
    if args.sample_identities:
        ids = np.unique(pack.identity)
        if args.sample_identities < len(ids):
            keep = np.random.default_rng(0).choice(ids, args.sample_identities, replace=False)
            pack = pack.subset(np.isin(pack.identity, keep))
            pack.manifest["sampled_identities"] = f"{args.sample_identities} of {len(ids)} (seed 0)"
    if args.max_frontal_photos:
        # Each CFP profile is paired with every frontal photo of its person (10); fewer targets
        # per profile cost little and make the pack fit a carry.
        photo = pack.frontal & (pack.group < 0)
        rank = np.zeros(len(pack), int)
        seen: dict = {}
        for i in np.flatnonzero(photo):
            seen[int(pack.identity[i])] = rank[i] = seen.get(int(pack.identity[i]), 0) + 1
        pack = pack.subset(~photo | (rank <= args.max_frontal_photos))
        pack.manifest["max_frontal_photos"] = args.max_frontal_photos
    if args.quality:
        pack = pack.reencoded(args.quality)
    pack.save(Path(args.out))
    size = Path(args.out).stat().st_size
    print(json.dumps({"records": len(pack), "identities": int(len(np.unique(pack.identity))), "mib": round(size / 2**20, 1),
                      "jpeg_quality": args.quality or "unchanged"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
