"""Behaviour through the public API alone, so that two versions of pifr can be compared: the
CFP 351–400 figures (tuning split) and every probe's embedding, written to an ``.npz``.

* Gallery: frontal 01 of each of the 50 people enrolled with ``pifr.Gallery()`` defaults (default
  embedder, ``"auto"``, default operating point); probes: their 200 profiles through
  ``Gallery.identify`` → rank-1 and DIR (rank-1 correct and accepted); strangers: CFP 301–350's
  profile 01 (50) → how many are accepted as anyone.
* ``pifr.verify`` on 200 genuine pairs (frontal 02 against each profile of the same person):
  how many are accepted.
* The embeddings ``pifr.embed`` gives each probe (default policy), kept so that ``--against``
  reports the largest change per probe between two runs.

Uses nothing but ``pifr.Gallery``, ``pifr.embed`` and ``pifr.verify``: the script itself must not
change between the versions it compares.

    python -m research.public_parity --out runs/parity_after.npz [--against runs/parity_before.npz]
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import time
from pathlib import Path

import numpy as np

import pifr
from pifr.eval.datasets import cfp_images, shared_root

TUNE = range(351, 401)
STRANGERS = range(301, 351)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help=".npz to write")
    ap.add_argument("--against", help="an earlier run's .npz to compare with")
    ap.add_argument("--shared", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfp = shared_root(args.shared) / "data" / "cfp"
    frontal = {(i.identity, i.index): i.path for i in cfp_images(cfp, TUNE, "frontal")}
    profiles = sorted(((i.identity, i.path) for i in cfp_images(cfp, TUNE, "profile")), key=lambda t: str(t[1]))
    strangers = sorted(i.path for i in cfp_images(cfp, STRANGERS, "profile") if i.index == 1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()

    g = pifr.Gallery()
    for ident in TUNE:
        rep = g.enroll(str(ident), [frontal[(ident, 1)]])
        assert rep.added >= 1, rep
    hits = dir_hits = 0
    for ident, path in profiles:
        m = g.identify(path)[0]
        hits += m.identity == str(ident)
        dir_hits += m.identity == str(ident) and bool(m.accepted)
    false_accepts = sum(bool(g.identify(p)[0].accepted) for p in strangers)
    accepted = sum(pifr.verify(frontal[(ident, 2)], path).same for ident, path in profiles)
    embs = np.stack([pifr.embed(path) for _, path in profiles])
    figures = {"commit": commit, "embedder": g.embedder, "gallery_threshold": round(g.threshold, 4),
               "profile_rank1": f"{hits}/{len(profiles)}", "dir": f"{dir_hits}/{len(profiles)}",
               "strangers_accepted": f"{false_accepts}/{len(strangers)}",
               "verify_genuine_accepted": f"{accepted}/{len(profiles)}", "seconds": round(time.perf_counter() - t0, 1),
               "split": "tune: CFP 351-400 (gallery frontal 01, probes all profiles, verify frontal 02 vs profiles); "
                        "strangers CFP 301-350 profile 01"}
    print(json.dumps(figures))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, embeddings=embs, paths=np.array([str(p) for _, p in profiles]), figures=json.dumps(figures))
    if args.against:
        old = np.load(args.against)
        assert list(old["paths"]) == [str(p) for _, p in profiles], "different probes"
        cos = np.sum(old["embeddings"] * embs, axis=1)
        print(f"against {args.against} ({json.loads(str(old['figures']))['commit']}): "
              f"probe embeddings' cosine min {cos.min():.6f}, median {np.median(cos):.6f}")


if __name__ == "__main__":
    main()
