"""Shared benchmark plumbing: run records, cached embeddings, plots. Never imports training code."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Union

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

import pifr  # noqa: E402
import pifr.embedders  # noqa: E402
import pifr.weights  # noqa: E402
from pifr._provenance import source_commit  # noqa: E402
from pifr.eval.datasets import SPLITS, shared_root  # noqa: E402 - shared_root is re-exported to the benchmarks

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ROOT", "SPLITS", "append_runlog", "cache_dir", "device_description", "embed_paths", "git_commit",
           "markdown_table", "pair_scores", "parser", "plot_roc", "run_header", "save_record", "shared_root",
           "weights_sha", "write_table"]


def parser(doc: str, out: str, embedders: bool = True):
    """The options every benchmark shares: --shared, --out and, for recognition runs, --embedders and --detector."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=None, help="shared data root (default: $PIFR_SHARED or ../shared)")
    ap.add_argument("--out", default=out, help="folder for results and runs.jsonl")
    if embedders:
        # --embedder NAME reads naturally for one model (a built-in one, or one registered in $PIFR_EMBEDDERS).
        ap.add_argument("--embedders", "--embedder", nargs="+", default=["dlib_resnet", "mobilefacenet"])
        ap.add_argument("--detector", default="retinaface")
    return ap


def git_commit() -> str:
    """The checkout's short commit (+ "-dirty"), or ``$PIFR_COMMIT`` where set (see
    :func:`pifr._provenance.source_commit`)."""
    return source_commit(short=True)


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
        emb = pifr.embedders.get_embedder(e)
        if hasattr(emb, "registration"):  # a registered ONNX model: its sha256 also covers external data files
            out[e] = emb.sha256
            continue
        spec, p = resolve(emb.spec)
        out[e] = spec.sha256 or pifr.weights.sha256_file(p)
    return out


def cache_dir() -> Path:
    d = Path(os.environ.get("PIFR_CACHE", Path.home() / ".cache" / "pifr"))
    d.mkdir(parents=True, exist_ok=True)
    return d


CHUNK = 256


def embed_paths(paths: Sequence[Path], embedder: str, detector: str, select: str = "largest",
                cache: bool = True, with_yaw: bool = False):
    """Embeddings by path string (``None`` where no face was found).

    Each image is cached on disk on its own, under (embedder, weights sha256, detector, selection)
    and keyed by its path, size and mtime: a run over a different set of files reuses every image
    already embedded, an interrupted run resumes where it stopped, and a changed file invalidates
    only itself. Images not in the cache are detected and aligned one by one and their crops
    embedded :data:`CHUNK` at a time. With ``with_yaw`` also returns the chosen face's estimated
    yaw (degrees, NaN where no face).
    """
    from tqdm import tqdm

    uniq = sorted({str(p) for p in paths})
    # The yaw stored with each row comes from the pose network: its weights are part of the key too.
    yaw_net = pifr.weights.get_spec("tddfa_mb05").sha256 or ""
    tag = f"{embedder}_{weights_sha([embedder])[embedder][:12]}_{detector}_{select}_yaw{yaw_net[:8]}_v{pifr.__version__}"
    d = cache_dir() / tag / "img"
    d.mkdir(parents=True, exist_ok=True)

    def entry(p: str) -> Path:
        stamp = [p, os.path.getsize(p), os.path.getmtime(p)] if os.path.exists(p) else [p, -1, -1]
        return d / (hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:24] + ".npy")

    # One row per image: [found (1/0), yaw, embedding...] as float32.
    rows: Dict[str, np.ndarray] = {}
    todo = []
    for p in uniq:
        f = entry(p)
        if cache and f.is_file():
            rows[p] = np.load(f, allow_pickle=False)
        else:
            todo.append((p, f))
    bar = tqdm(total=len(uniq), initial=len(rows), desc=f"embed[{embedder}]", unit="img")
    for i in range(0, len(todo), CHUNK):
        chunk = todo[i:i + CHUNK]
        arr, ok, yaw = _embed_chunk([p for p, _ in chunk], embedder, detector, select)
        for k, (p, f) in enumerate(chunk):
            rows[p] = np.concatenate([[float(ok[k]), yaw[k]], arr[k]]).astype(np.float32)
            if cache:
                tmp = f.with_name(f.stem + ".tmp.npy")
                np.save(tmp, rows[p])
                os.replace(tmp, f)
        bar.update(len(chunk))
    bar.close()
    embs = {p: (rows[p][2:] if rows[p][0] else None) for p in uniq}
    if with_yaw:
        return embs, {p: float(rows[p][1]) for p in uniq}
    return embs


def _embed_chunk(paths, embedder, detector, select):
    """Locate and align each image's face (:func:`pifr.detection.locate_face`), then embed the
    chunk's crops in one batch."""
    import logging

    from pifr.detection import locate_face
    from pifr.embedders import get_embedder

    emb = get_embedder(embedder)
    crops, idx = [], []
    yaw = np.full(len(paths), np.nan, np.float32)
    for i, p in enumerate(paths):
        try:
            img, face = locate_face(p, detector=detector, select=select)
        except pifr.PifrError as e:
            logging.getLogger("pifr").warning("%s: %s", p, e)
            continue
        crops.append(emb.align(img, face))
        idx.append(i)
        yaw[i] = np.nan if face.yaw is None else face.yaw
    arr = np.zeros((len(paths), emb.dim), np.float32)
    ok = np.zeros(len(paths), bool)
    if crops:
        arr[idx] = emb.embed_crops(np.stack(crops))
        ok[idx] = True
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


def save_record(out_dir: Path, record: Dict[str, object], name: str) -> None:
    """Append the run to ``runs.jsonl`` and write it in full to ``<name>.json``."""
    append_runlog(out_dir, record)
    (Path(out_dir) / f"{name}.json").write_text(json.dumps(record, indent=2, default=float))


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


def _pandas():
    try:
        import pandas
    except ImportError as e:
        raise pifr.DependencyError("the benchmarks' result tables need pandas and tabulate: pip install 'pifr[eval]'") from e
    return pandas


def markdown_table(df: "pd.DataFrame", floatfmt: Union[str, Mapping[str, str]] = ".1f") -> str:
    """``df`` as a Markdown table (``DataFrame.to_markdown``): floats with ``floatfmt`` (one
    format, or one per column name; columns not named get ".1f"), missing values (NaN, None) blank,
    and a "|" in a name or cell escaped (``|yaw|`` would otherwise split the column)."""
    fmt = tuple(floatfmt.get(c, ".1f") for c in df.columns) if isinstance(floatfmt, Mapping) else floatfmt
    esc = lambda v: v.replace("|", "\\|") if isinstance(v, str) else v  # noqa: E731
    shown = df.map(esc).rename(columns=esc).astype(object)
    shown = shown.where(shown.notna(), None)  # tabulate leaves None blank, but prints NaN as "nan"
    return shown.to_markdown(index=False, floatfmt=fmt, missingval="")


def write_table(rows: Union["pd.DataFrame", Sequence[Mapping[str, object]]], out_dir: Path, name: str, title: str = "",
                floatfmt: Union[str, Mapping[str, str]] = ".1f") -> "pd.DataFrame":
    """A result table: printed as Markdown (under ``title``) and written to ``<out_dir>/<name>.csv``
    (every digit) and ``<name>.md`` (as printed). ``rows``: a DataFrame, or dicts with the same
    keys in column order. Returns the DataFrame."""
    df = rows if isinstance(rows, _pandas().DataFrame) else _pandas().DataFrame(list(rows))
    md = markdown_table(df, floatfmt)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / f"{name}.csv", index=False)
    (out_dir / f"{name}.md").write_text((f"{title}\n\n" if title else "") + md + "\n", encoding="utf-8")
    print((f"\n{title}\n" if title else "") + "\n" + md)
    return df
