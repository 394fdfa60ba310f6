"""Readers for the evaluation datasets' own file layouts and protocols (LFW, CFP).

Identity splits used throughout pifr (write them into every run record):
* ``train``: CFP identities 001–350 and LFW;
* ``tune``: CFP identities 351–400 and LFW ``pairsDevTrain`` (thresholds, policies);
* everything else is only reported.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Set

import numpy as np

log = logging.getLogger("pifr")

SPLITS = {
    "train": "CFP identities 001-350; LFW",
    "tune": "CFP identities 351-400; LFW pairsDevTrain",
    "report": "everything else (LFW pairs.txt 10 folds, CFP protocol folds) is reported, never tuned on",
}


def shared_root(root: Optional[str] = None) -> Path:
    """Root of the shared data: ``root`` → ``$PIFR_SHARED`` → ``../shared`` beside the repository
    (this file is ``<repo>/pifr/eval/datasets.py``)."""
    if root:
        return Path(root)
    env = os.environ.get("PIFR_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared"


@dataclass(frozen=True)
class Pair:
    """A verification pair: two image paths, whether they show the same person, and its fold."""

    a: Path
    b: Path
    same: bool
    fold: int


def lfw_pairs(lfw_dir: Path, pairs_file: str = "pairs.txt") -> List[Pair]:
    """LFW pairs in the official format (``pairs.txt``: 10 folds × 300 same + 300 different;
    ``pairsDevTrain.txt``: one block of N same then N different)."""
    lfw_dir = Path(lfw_dir)
    lines = (lfw_dir / pairs_file).read_text().split("\n")
    head = lines[0].split()
    if len(head) == 2:
        n_folds, n = int(head[0]), int(head[1])
    else:
        n_folds, n = 1, int(head[0])
    img = lambda name, i: lfw_dir / name / f"{name}_{int(i):04d}.jpg"  # noqa: E731
    out: List[Pair] = []
    rows = [l.split() for l in lines[1:] if l.strip()]
    if len(rows) != n_folds * 2 * n:
        raise ValueError(f"{pairs_file}: expected {n_folds * 2 * n} pairs, found {len(rows)}")
    for k, r in enumerate(rows):
        fold = k // (2 * n)
        if len(r) == 3:
            out.append(Pair(img(r[0], r[1]), img(r[0], r[2]), True, fold))
        else:
            out.append(Pair(img(r[0], r[1]), img(r[2], r[3]), False, fold))
    return out


@dataclass(frozen=True)
class CFPImage:
    path: Path
    identity: int
    pose: str  # "frontal" or "profile"
    index: int


def cfp_images(cfp_dir: Path, identities: Optional[range] = None, pose: Optional[str] = None) -> List[CFPImage]:
    """All CFP images present under ``cfp_dir/Data/Images``, optionally filtered."""
    root = Path(cfp_dir) / "Data" / "Images"
    out = []
    for d in sorted(root.iterdir()):
        if not d.name.isdigit():
            continue
        ident = int(d.name)
        if identities is not None and ident not in identities:
            continue
        for p in ("frontal", "profile"):
            if pose and p != pose:
                continue
            for f in sorted((d / p).glob("*.jpg")):
                out.append(CFPImage(f, ident, p, int(f.stem)))
    return out


# CFP's 30 manual fiducials mark one half of the face (jaw ear→chin 0–8, brow 9–11, eye 12–17,
# nose 18–24, mouth corner 25, lip midline 26–29). The points they share with the iBUG 68-point
# layout, for the subject's right half (the half on the image's left in a frontal view); the
# other half's eye and mouth corners are these points' mirror images.
CFP_TO_68 = {12: 36, 15: 39, 18: 27, 21: 30, 25: 48, 26: 51, 28: 57, 8: 8}
MIRROR_68 = {36: 45, 39: 42, 48: 54}


def cfp_fiducials(path: Path) -> np.ndarray:
    """``(30, 2)`` manual fiducials (x, y px) of a CFP image ``Data/Images/<id>/<pose>/NN.jpg``,
    read from ``Data/Fiducials/<id>/<pose>/NN.txt``."""
    p = Path(path)
    return np.loadtxt(p.parents[3] / "Fiducials" / p.parent.parent.name / p.parent.name / (p.stem + ".txt"), delimiter=",")


def cfp_landmarks68(fiducials: np.ndarray) -> np.ndarray:
    """``(68, 2)`` the fiducials placed at their 68-point indices (NaN where CFP marks nothing).
    CFP marks the half whose ear point (0) lies on the side of the chin (8) it lies: ear left of
    the chin is the subject's right half, else the mirrored indices."""
    fid = np.asarray(fiducials, np.float64)
    right = fid[0, 0] < fid[8, 0]
    out = np.full((68, 2), np.nan)
    for c, k in CFP_TO_68.items():
        out[k if right else MIRROR_68.get(k, k)] = fid[c]
    return out


def cfp_names(cfp_dir: Path) -> Dict[int, str]:
    """CFP identity number → the person's name (``Data/list_name.txt``, one per line, in
    identity order), spelt as LFW spells names (spaces → underscores)."""
    lines = (Path(cfp_dir) / "Data" / "list_name.txt").read_text().splitlines()
    return {i + 1: n.strip().replace(" ", "_") for i, n in enumerate(lines) if n.strip()}


def lfw_people(lfw_dir: Path, exclude: Optional[Set[str]] = None) -> List[List[Path]]:
    """Every LFW person's images (name order; each list in image order), leaving out people
    whose name is in ``exclude`` — e.g. the CFP validation identities, 19 of whose 50 are also
    in LFW, so that training on LFW never shows a validation person."""
    exclude = exclude or set()
    out = []
    for d in sorted(Path(lfw_dir).iterdir()):
        if d.is_dir() and d.name not in exclude:
            imgs = sorted(d.glob(f"{d.name}_*.jpg"))
            if imgs:
                out.append(imgs)
    return out


@dataclass(frozen=True)
class CFPProtocol:
    pairs: List[Pair]
    skipped: int  # protocol pairs whose images are absent here (identities 401–500)


def cfp_protocol(cfp_dir: Path, setting: str = "FP") -> CFPProtocol:
    """CFP 10-fold verification pairs (``setting`` "FF" or "FP"); absent images are skipped and counted."""
    cfp_dir = Path(cfp_dir)
    if setting not in ("FF", "FP"):
        raise ValueError("setting must be 'FF' or 'FP'")
    proto = cfp_dir / "Protocol"

    def index(name: str) -> Dict[int, Path]:
        m = {}
        for line in (proto / name).read_text().splitlines():
            if line.strip():
                i, rel = line.split(maxsplit=1)
                m[int(i)] = (proto / rel.strip()).resolve()
        return m

    first = index("Pair_list_F.txt")
    second = first if setting == "FF" else index("Pair_list_P.txt")
    pairs, skipped = [], 0
    for fold in range(1, 11):
        for kind in ("same", "diff"):
            for line in (proto / "Split" / setting / f"{fold:02d}" / f"{kind}.txt").read_text().splitlines():
                if not line.strip():
                    continue
                i, j = (int(v) for v in line.split(","))
                a, b = first[i], second[j]
                if not (a.is_file() and b.is_file()):
                    skipped += 1
                    continue
                pairs.append(Pair(a, b, kind == "same", fold - 1))
    if skipped:
        log.info("CFP %s: skipped %d protocol pairs with absent images", setting, skipped)
    return CFPProtocol(pairs, skipped)


def cfp_identity(path: Path) -> int:
    """Identity number of a CFP image path (``.../Images/<id>/<pose>/NN.jpg``)."""
    return int(Path(path).parent.parent.name)


@dataclass(frozen=True)
class CMUImage:
    """One CMU Face Images file (Mitchell, UCI; 128×120 grayscale at full scale)."""

    path: Path
    person: str
    pose: str  # "straight", "left", "right" or "up"
    expression: str
    eyes: str  # "open" or "sunglasses"


def cmu_faces(archive: Path, dest: Path) -> List[CMUImage]:
    """Full-scale CMU Face Images from ``cmu_faces_full_and_half.tar.gz``, extracted under ``dest``
    once (the archive also holds half-scale ``_2`` copies, which are skipped). Its people are not
    in CFP or LFW, and no pifr threshold or policy is tuned on it: a report-only set."""
    import tarfile

    dest = Path(dest)
    root = dest / "faces"
    if not root.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, members=[m for m in tar.getmembers() if m.name.endswith(".pgm")], filter="data")
    out = []
    for f in sorted(root.glob("*/*.pgm")):
        parts = f.stem.split("_")
        if len(parts) != 4:  # "_2" / "_4": the half- and quarter-scale copies
            continue
        out.append(CMUImage(f, parts[0], parts[1], parts[2], parts[3]))
    return out
