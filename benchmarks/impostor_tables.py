"""Build the impostor-score tables that set a Gallery's default operating point
(``pifr/data/impostor_tables.json``, shipped as package data).

Data (tuning split only): one photo (``_0001``) of each of the first ``--lfw-people`` people of LFW
``peopleDevTrain.txt`` (people whose name is, or is spelt close to, a CFP identity's are left out,
so no impostor pair is secretly one person) plus every frontal of CFP identities 351–400. Every pair of two different
people is an impostor pair (millions of them); the table keeps, per embedder, the score above which
a fraction ``p`` of those pairs lie, for ``p`` from 10 % down to 1 / (number of pairs), 20 steps
per decade. ``pifr.gallery.default_threshold`` reads it.

    python benchmarks/impostor_tables.py [--embedders dlib_resnet mobilefacenet] [--lfw-people 5000] --write
"""
from __future__ import annotations

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401

import json
import os
import sys
from pathlib import Path

import numpy as np
from benchmarks._harness import ROOT, append_runlog, embed_paths, git_commit, parser, run_header, shared_root, weights_sha

from pifr.eval.datasets import cfp_images, cfp_names

TABLE = ROOT / "pifr" / "data" / "impostor_tables.json"
STEPS_PER_DECADE = 20


def cfp_namesakes(lfw_people, cfp_names) -> set:
    """LFW people who may be a CFP person: the same name ignoring case, or a close spelling
    (difflib ratio ≥ 0.85: CFP writes "Nicholas Cage", "Queen Elizabeth Ii", "Nancy Peloci").
    Over-matching only drops a few LFW people; missing one would count a person's own photos as
    impostor pairs (Nicolas_Cage against CFP 364 were 14 of dlib's 15 highest "impostor" scores)."""
    import difflib

    cfp = [n.lower() for n in cfp_names]
    exact = set(cfp)
    return {p for p in lfw_people if p.lower() in exact or difflib.get_close_matches(p.lower(), cfp, n=1, cutoff=0.85)}


def impostor_scores(e: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Cosine scores of every pair of rows with different labels (upper triangle, float32)."""
    out = []
    for i in range(0, len(e), 512):  # row blocks: the full N×N matrix need never exist at once
        s = e[i:i + 512] @ e.T
        rows = np.arange(i, min(i + 512, len(e)))
        keep = (np.arange(len(e))[None, :] > rows[:, None]) & (labels[rows][:, None] != labels[None, :])
        out.append(s[keep])
    return np.concatenate(out)


def tail_table(scores: np.ndarray) -> list:
    """``[[p, t], ...]``: ``t`` is the lowest threshold with at most a fraction ``p`` of ``scores`` ≥ ``t``."""
    s = np.sort(scores.astype(np.float64))[::-1]
    n = len(s)
    rows = []
    k = STEPS_PER_DECADE  # p = 10^(-k / STEPS_PER_DECADE), starting at 10 %
    while True:
        p = 10 ** (-k / STEPS_PER_DECADE)
        if p < 1 / n:
            break
        allowed = int(np.floor(p * n + 1e-9))
        rows.append([float(f"{p:.6g}"), round(float(np.nextafter(s[allowed], np.inf)) + 5e-7, 6)])
        k += 1
    # The last row: stricter than every impostor seen (its FAR is "below 1 / n", not measured).
    rows.append([float(f"{1 / n:.6g}"), round(float(s[0]) + 5e-7, 6)])
    return rows


def main() -> None:
    ap = parser(__doc__, "results/impostor_tables")
    ap.add_argument("--lfw-people", type=int, default=5000)
    ap.add_argument("--write", action="store_true", help=f"write the table into {TABLE.relative_to(ROOT)}")
    args = ap.parse_args()
    root = shared_root(args.shared) / "data"
    cfp_dir, lfw = root / "cfp", root / "lfw"
    people = [l.split("\t")[0] for l in (lfw / "peopleDevTrain.txt").read_text().splitlines()[1:] if l.strip()]
    namesakes = cfp_namesakes(people, cfp_names(cfp_dir).values())
    people = [p for p in people if p not in namesakes][: args.lfw_people]
    lfw_paths = [lfw / p / f"{p}_0001.jpg" for p in people]
    cfp = [im for im in cfp_images(cfp_dir, range(351, 401), pose="frontal")]
    data = (f"LFW peopleDevTrain.txt: image _0001 of the first {len(people)} people not in CFP (nor a close spelling of a CFP name); "
            f"CFP 351-400 frontals ({len(cfp)} images)")
    command = "python benchmarks/impostor_tables.py " + " ".join(sys.argv[1:])
    if os.environ.get("PIFR_WEIGHTS_DIR"):  # user-supplied weights (e.g. mobilefacenet_casia) come from there
        command = f"PIFR_WEIGHTS_DIR={os.environ['PIFR_WEIGHTS_DIR']} {command}"
    rec = run_header("impostor_tables", data, weights_sha(args.embedders), "tune: LFW peopleDevTrain, CFP 351-400")
    tables = json.loads(TABLE.read_text()) if TABLE.is_file() else {}
    for name in args.embedders:
        el = embed_paths(lfw_paths, name, args.detector, select="center")
        ec = embed_paths([im.path for im in cfp], name, args.detector)
        vecs, labels = [], []
        for p, person in zip(lfw_paths, people):
            if el[str(p)] is not None:
                vecs.append(el[str(p)])
                labels.append(f"lfw:{person}")
        for im in cfp:
            if ec[str(im.path)] is not None:
                vecs.append(ec[str(im.path)])
                labels.append(f"cfp:{im.identity}")
        e, lab = np.stack(vecs).astype(np.float32), np.array(labels)
        s = impostor_scores(e, lab)
        table = tail_table(s)
        entry = {"weights_sha256": weights_sha([name])[name], "detector": args.detector, "data": data,
                 "split": "tune", "images": int(len(e)), "people": int(len(set(labels))),
                 "impostor_pairs": int(len(s)), "command": command, "commit": git_commit(),
                 "far_per_pair_to_threshold": table}
        tables[name] = entry
        print(f"{name}: {len(e)} images, {len(set(labels))} people, {len(s):,} impostor pairs; "
              + ", ".join(f"FAR {p:g} → {t:.4f}" for p, t in table if p in (0.01, 0.001, 0.0001, 1e-05, 1e-06)))
        rec.setdefault("results", {})[name] = {k: v for k, v in entry.items() if k != "far_per_pair_to_threshold"}
    append_runlog(Path(args.out), rec)
    if args.write:
        TABLE.parent.mkdir(parents=True, exist_ok=True)
        TABLE.write_text(json.dumps(tables, indent=1) + "\n")
        print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()
