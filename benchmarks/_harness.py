"""Shared benchmark plumbing: run records, cached embeddings, plots. Never imports training code."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pifr  # noqa: E402
import pifr.embedders  # noqa: E402
import pifr.weights  # noqa: E402
from pifr.datasets import SPLITS, shared_root  # noqa: E402,F401 - shared_root is re-exported to the benchmarks


def parser(doc: str, out: str, embedders: bool = True):
    """The options every benchmark shares: --shared, --out and, for recognition runs, --embedders and --detector."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=None, help="shared data root (default: $PIFR_SHARED or ../shared)")
    ap.add_argument("--out", default=out, help="folder for results and runs.jsonl")
    if embedders:
        ap.add_argument("--embedders", nargs="+", default=["dlib_resnet", "mobilefacenet"])
        ap.add_argument("--detector", default="retinaface")
    return ap


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return f"cpu:{platform.processor() or platform.machine()} x{os.cpu_count()} (torch threads {torch.get_num_threads()})"


def run_header(name: str, data: str, weights: Dict[str, str], split: str) -> Dict[str, object]:
    rec = {
        "benchmark": name,
        "data": data,
        "split": split,
        "splits": SPLITS,
        "weights": weights,
        "commit": git_commit(),
        "device": device_description(),
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    print("# run:", json.dumps({k: v for k, v in rec.items() if k != "splits"}))
    return rec


def weights_sha(embedders: Sequence[str]) -> Dict[str, str]:
    from pifr.weights import resolve

    out = {}
    for e in embedders:
        spec, p = resolve(pifr.embedders.get_embedder(e).spec)
        out[e] = spec.sha256 or pifr.weights.sha256_file(p)
    return out


def cache_dir() -> Path:
    d = Path(os.environ.get("PIFR_CACHE", Path.home() / ".cache" / "pifr"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def embed_paths(paths: Sequence[Path], embedder: str, detector: str, select: str = "largest",
                cache: bool = True, with_yaw: bool = False):
    """Embeddings by path string (``None`` where no face was found), cached on disk per
    (paths, embedder weights, detector, selection). With ``with_yaw`` also returns a dict of
    the chosen face's estimated yaw (degrees, NaN where no face)."""
    uniq = sorted({str(p) for p in paths})
    key = hashlib.sha256(json.dumps([uniq, embedder, weights_sha([embedder])[embedder], detector, select, pifr.__version__]).encode()).hexdigest()[:16]
    f = cache_dir() / f"emb_{embedder}_{detector}_{key}.npz"
    if cache and f.is_file():
        z = np.load(f, allow_pickle=False)
        arr, ok = z["emb"], z["ok"]
        yaw = z["yaw"] if "yaw" in z.files else np.full(len(uniq), np.nan, np.float32)
    else:
        arr, ok, yaw = _embed_uncached(uniq, embedder, detector, select)
        if cache:
            tmp = f.with_suffix(".tmp.npz")
            np.savez(tmp, emb=arr, ok=ok, yaw=yaw)
            os.replace(tmp, f)
    embs = {p: (arr[i] if ok[i] else None) for i, p in enumerate(uniq)}
    if with_yaw:
        return embs, {p: float(yaw[i]) for i, p in enumerate(uniq)}
    return embs


def _embed_uncached(uniq, embedder, detector, select):
    from pifr.embedders import embed_many

    res = embed_many(uniq, embedder=embedder, detector=detector, select=select, progress=True)
    emb = pifr.embedders.get_embedder(embedder)
    arr = np.zeros((len(uniq), emb.dim), np.float32)
    ok = np.zeros(len(uniq), bool)
    yaw = np.full(len(uniq), np.nan, np.float32)
    for r in res:
        if r.ok:
            arr[r.index] = r.embedding
            ok[r.index] = True
            yaw[r.index] = np.nan if r.face.yaw is None else r.face.yaw
    return arr, ok, yaw


def pair_scores(pairs, embs: Dict[str, Optional[np.ndarray]]):
    """Cosine scores; a pair with a missing face scores -1 (counted as a failure to match)."""
    s = np.empty(len(pairs))
    missing = 0
    for k, p in enumerate(pairs):
        a, b = embs[str(p.a)], embs[str(p.b)]
        if a is None or b is None:
            s[k] = -1.0
            missing += 1
        else:
            s[k] = float(a @ b)
    return s, missing


def append_runlog(out_dir: Path, record: Dict[str, object]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "runs.jsonl", "a") as f:
        f.write(json.dumps(record, default=float) + "\n")


def plot_roc(curves: Dict[str, tuple], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, (far, tar) in curves.items():
        ax.plot(np.maximum(far, 1e-4), tar, label=name)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
