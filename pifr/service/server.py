"""``pifr serve``: arguments, thread limits, model warm-up, uvicorn (FastAPI is imported only here, lazily)."""
from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger("pifr.service")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``serve`` subcommand's options (documented in docs/service.md)."""
    p.add_argument("--gallery", required=True, help="gallery file (created at the first enrolment), or postgresql://… URL")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--far", type=float, default=0.01,
                   help="false-accept rate per probe that identify's threshold holds for the gallery's size (default 0.01)")
    p.add_argument("--embedder", default=None, help="embedder of a new gallery (default: pifr's default)")
    p.add_argument("--api-key-file", default=None,
                   help="file of '[name=]scope:KEY' lines (also read: $PIFR_API_KEYS; scopes admin, recognize)")
    p.add_argument("--insecure-no-auth", action="store_true", help="serve without keys (loopback addresses only)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body (default 10 MiB)")
    p.add_argument("--max-pixels", type=int, default=None, help="largest image in pixels (default pifr.image.MAX_PIXELS)")
    p.add_argument("--workers", type=int, default=0, help="recognition threads (default: the cores)")
    p.add_argument("--threads", type=int, default=0, help="torch/onnxruntime threads per worker (default cores // workers)")
    p.add_argument("--queue", type=int, default=0, help="requests that may wait for a worker; more get 503 (default max(32, 4 × workers))")
    p.add_argument("--audit-log", default=None, help="JSON-lines audit file (default <gallery>.audit.jsonl)")
    p.add_argument("--audit-max-mb", type=float, default=50.0, help="rotate the audit log at this size (default 50)")
    p.add_argument("--keep-probes", default=None, metavar="DIR", help="keep each decision's probe images in DIR")
    p.add_argument("--poll", type=float, default=0.5, help="PostgreSQL: seconds between checks for other servers' writes")


def config_from_args(args: argparse.Namespace):  # noqa: ANN201
    """The :class:`~pifr.service.config.ServiceConfig` of the parsed options (keys from the
    environment and the key file). Raises InvalidArgumentError."""
    from ..image import MAX_PIXELS
    from .config import ServiceConfig, load_keys

    return ServiceConfig(
        gallery=args.gallery, api_keys=load_keys(None, args.api_key_file), insecure_no_auth=args.insecure_no_auth,
        host=args.host, port=args.port, far=args.far, embedder=args.embedder, max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels or MAX_PIXELS, workers=args.workers, threads=args.threads, queue=args.queue,
        audit_log=args.audit_log, audit_max_mb=args.audit_max_mb, keep_probes=args.keep_probes, poll_s=args.poll)


def run(args: argparse.Namespace) -> int:
    """Start the server and block until it stops (SIGINT / SIGTERM)."""
    cfg = config_from_args(args)
    # Before torch loads: its OpenMP pool and onnxruntime's follow this (workers × threads ≤ cores).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(cfg.n_threads)
    import torch
    import uvicorn

    from .app import create_app

    torch.set_num_threads(cfg.n_threads)
    logging.getLogger("pifr").setLevel(logging.INFO)
    app = create_app(cfg)
    app.state.recogniser.warm(app.state.store.snapshot())
    log.info("pifr serve: %s, %d workers × %d threads, queue %d, %s, audit %s", app.state.store.description,
             cfg.n_workers, cfg.n_threads, cfg.n_queue, "NO AUTH" if not cfg.api_keys else f"{len(cfg.api_keys)} keys",
             cfg.audit_path)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=10,
                server_header=False)
    return 0
