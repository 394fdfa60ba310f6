"""Throughput of the face pipeline (``pifr.embed_many``: load, detect, one 3DDFA pass for yaw and
fit, views, embedding) in images per second, by batch size, with the pose policy off
(``"never"``) and on (``"auto"``: turned faces rendered and fused).

Data: CFP 351–400 (tuning split), profiles and frontals interleaved so that about a third of the
faces are turned (the ones ``"auto"`` renders). Each setting runs once after a warm-up batch;
the stages' share of the time comes from one profiled pass at the largest batch; the embedder
alone is then timed in network passes of 1, 8, 64 and 256 crops (why the pipeline caps a CPU
pass at ``pifr.pipeline.CPU_NET_BATCH`` crops).

    python benchmarks/pipeline.py [--images 256] [--batches 1 64 256] [--threads 1] [--embedder sface]
"""
from __future__ import annotations

import cProfile
import pstats
import time
from pathlib import Path

if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401
from benchmarks._harness import parser, run_header, save_record, shared_root, weights_sha, write_table

import pifr
from pifr.eval.datasets import cfp_images

#: The pipeline's stages, as the functions whose cumulative time measures each.
STAGES = {"load": "load_image", "detect": "detect_many", "3DDFA pass": "regress_faces",
          "views (render)": "view_crops", "embed": "embed_crops"}


def images(cfp: Path, n: int) -> list:
    """``n`` CFP 351–400 paths: each person's profiles 01–04 and frontals 01–08, interleaved."""
    people = range(351, 401)
    prof = {(i.identity, i.index): i.path for i in cfp_images(cfp, people, "profile")}
    front = {(i.identity, i.index): i.path for i in cfp_images(cfp, people, "frontal")}
    out = []
    for k in range(1, 9):
        for who in people:
            if k <= 4 and (who, k) in prof:
                out.append(prof[(who, k)])
            if (who, k) in front:
                out.append(front[(who, k)])
    return out[:n]


def stage_seconds(paths: list, embedder: str, batch: int) -> dict:
    """Seconds spent in each stage of one ``"auto"`` pass (profiled: slower than the timed runs)."""
    prof = cProfile.Profile()
    prof.enable()
    pifr.embed_many(paths, embedder=embedder, batch_size=batch)
    prof.disable()
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    out = {}
    for stage, fn in STAGES.items():
        out[stage] = sum(v[3] for k, v in stats.items() if k[2] == fn and "pifr" in k[0])
    return out


def ms_per_crop(embedder: str, passes, crops: int = 256) -> dict:
    """The embedder's milliseconds per crop when ``crops`` aligned crops go through it in passes
    of each size in ``passes`` (random pixels: the arithmetic does not depend on them)."""
    import numpy as np

    from pifr.embedders import get_embedder

    emb = get_embedder(embedder)
    size = emb.template.size
    x = np.random.default_rng(0).integers(0, 256, (crops, size, size, 3), dtype=np.uint8)
    emb.embed_crops(x[:2])  # warm
    out = {}
    for n in passes:
        t0 = time.perf_counter()
        for i in range(0, crops, n):
            emb.embed_crops(x[i:i + n])
        out[n] = 1000 * (time.perf_counter() - t0) / crops
        print(f"{embedder}: {out[n]:.1f} ms a crop in passes of {n}", flush=True)
    return out


def main() -> None:
    ap = parser(__doc__, "results/pipeline", embedders=False)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64, 256])
    ap.add_argument("--passes", type=int, nargs="+", default=[1, 8, 64, 256],
                    help="crops per network pass for the embedder-alone timing")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--embedder", default=None, help="default: the library's default embedder")
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from pifr.embedders import DEFAULT_EMBEDDER

    name = args.embedder or DEFAULT_EMBEDDER
    cfp = shared_root(args.shared) / "data" / "cfp"
    paths = images(cfp, args.images)
    rec = run_header("pipeline", f"{cfp} (351-400: {len(paths)} images, profiles and frontals interleaved)",
                     weights_sha([name]), "tune: CFP 351-400")
    pifr.embed_many(paths[:8], embedder=name, batch_size=8)  # models loaded, caches warm
    rows = []
    for mode in ("never", "auto"):
        for b in args.batches:
            t0 = time.perf_counter()
            res = pifr.embed_many(paths, embedder=name, frontalize=mode, batch_size=b)
            dt = time.perf_counter() - t0
            rows.append({"policy": mode, "batch": b, "images": len(paths), "faces": sum(r.ok for r in res),
                         "fused": sum(r.fused for r in res), "seconds": dt, "images/s": len(paths) / dt})
            print(f"{mode} batch {b}: {len(paths) / dt:.2f} images/s", flush=True)
    df = write_table(rows, Path(args.out), "pipeline", f"pifr.embed_many throughput ({name}, {rec['device']})",
                     floatfmt={"seconds": ".1f", "images/s": ".2f"})
    stages = stage_seconds(paths, name, max(args.batches))
    total = sum(stages.values())
    write_table([{"stage": s, "seconds": t, "share %": 100 * t / total} for s, t in stages.items()], Path(args.out),
                "pipeline_stages", f'Where the time goes ("auto", batch {max(args.batches)}, profiled)',
                floatfmt={"seconds": ".1f", "share %": ".0f"})
    per_crop = ms_per_crop(name, args.passes)
    write_table([{"crops a pass": n, "ms a crop": v} for n, v in per_crop.items()], Path(args.out), "pipeline_passes",
                f"{name} alone, 256 crops in passes of each size", floatfmt={"ms a crop": ".1f"})
    rec.update(results=df.to_dict("records"), stages=stages, ms_per_crop=per_crop)
    save_record(Path(args.out), rec, "pipeline")


if __name__ == "__main__":
    main()
