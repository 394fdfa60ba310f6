"""Service settings and API keys (no FastAPI import: the CLI validates before loading anything)."""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

from ..errors import InvalidArgumentError

#: The two scopes. ``admin`` enrols and deletes and may also do everything ``recognize`` does.
SCOPES = ("admin", "recognize")
_KEY_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: Shortest API key accepted: anything shorter could be guessed.
MIN_KEY_CHARS = 16


@dataclass(frozen=True)
class ApiKey:
    """One API key: ``name`` is what the audit log records (never the key), ``scope`` one of :data:`SCOPES`."""

    name: str
    scope: str
    key: str = field(repr=False)


def parse_keys(text: str, *, source: str = "PIFR_API_KEYS") -> Tuple[ApiKey, ...]:
    """Keys from ``"scope:KEY,scope:KEY"`` or ``"name=scope:KEY"`` entries, separated by commas or
    new lines (a key file: one per line, ``#`` comments). A key without a name is named
    ``<scope>-<n>`` (n: its 1-based position).

    Raises:
        InvalidArgumentError: an unknown scope, a key shorter than :data:`MIN_KEY_CHARS`, a bad
        name, or the same key or name twice. The message never quotes a key.
    """
    keys = []
    entries = [e.strip() for line in text.splitlines() for e in line.split("#", 1)[0].split(",")]
    for n, entry in enumerate((e for e in entries if e), 1):
        name, eq, rest = entry.partition("=")
        if not eq:
            name, rest = "", entry
        scope, colon, key = rest.partition(":")
        scope, key, name = scope.strip(), key.strip(), name.strip()
        if not colon or scope not in SCOPES:
            raise InvalidArgumentError(f"{source}: entry {n} must be '[name=]scope:KEY' with scope one of {SCOPES}")
        if len(key) < MIN_KEY_CHARS or any(c.isspace() for c in key):
            raise InvalidArgumentError(f"{source}: entry {n}: keys must be at least {MIN_KEY_CHARS} characters without spaces")
        name = name or f"{scope}-{n}"
        if not _KEY_NAME.match(name):
            raise InvalidArgumentError(f"{source}: entry {n}: key names are 1-64 of A-Z a-z 0-9 _ . -")
        keys.append(ApiKey(name, scope, key))
    if len({k.key for k in keys}) != len(keys) or len({k.name for k in keys}) != len(keys):
        raise InvalidArgumentError(f"{source}: the same key or key name appears twice")
    return tuple(keys)


def load_keys(env: Optional[str] = None, key_file: Optional[str] = None) -> Tuple[ApiKey, ...]:
    """Keys from ``$PIFR_API_KEYS`` (``env``) and/or a key file; both may be given."""
    keys: Tuple[ApiKey, ...] = ()
    if env is None:
        env = os.environ.get("PIFR_API_KEYS", "")
    if env.strip():
        keys += parse_keys(env)
    if key_file:
        p = Path(key_file)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise InvalidArgumentError(f"key file {p}: {e.strerror or e}") from e
        keys += parse_keys(text, source=str(p))
    if len({k.key for k in keys}) != len(keys) or len({k.name for k in keys}) != len(keys):
        raise InvalidArgumentError("the same key or key name appears in $PIFR_API_KEYS and the key file")
    return keys


def is_loopback(host: str) -> bool:
    """``host`` only listens on this machine (127.0.0.0/8, ::1, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_workers() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``pifr serve`` is told.

    Attributes:
        gallery: a gallery file path, or a ``postgresql://`` URL.
        api_keys: the accepted keys; empty only with ``insecure_no_auth`` (then on loopback only).
        far: the false-accept rate per probe that identify's default threshold holds for the
            gallery's current size (ignored where the gallery has a fixed or calibrated threshold).
        embedder: the embedder of a gallery that does not exist yet (``None``: pifr's default).
        max_upload_mb: request bodies above this many MiB are answered 413.
        max_pixels: images with more pixels are answered 413 (pifr.image's guard).
        workers: recognition threads (default: the cores); ``threads``: torch / onnxruntime
            intra-op threads each (default: cores // workers, at least 1).
        queue: requests that may wait for a worker beyond those running (default max(32, 4 × workers));
            more are answered 503 with Retry-After.
        audit_log: JSON-lines audit file (``None``: beside the gallery file, or ``pifr-audit.jsonl``).
        audit_max_mb / audit_backups: size-based rotation of the audit log.
        keep_probes: a folder to keep each decision's probe images in (default: none kept).
        poll_s: how often a PostgreSQL store checks for other servers' writes.
    """

    gallery: str
    api_keys: Tuple[ApiKey, ...] = ()
    insecure_no_auth: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    far: float = 0.01
    embedder: Optional[str] = None
    max_upload_mb: float = 10.0
    max_pixels: int = 64_000_000
    workers: int = 0
    threads: int = 0
    queue: int = 0
    audit_log: Optional[str] = None
    audit_max_mb: float = 50.0
    audit_backups: int = 5
    keep_probes: Optional[str] = None
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.api_keys and not self.insecure_no_auth:
            raise InvalidArgumentError("no API keys configured: set PIFR_API_KEYS (e.g. 'admin:KEY1,recognize:KEY2') or "
                                       "--api-key-file; --insecure-no-auth serves without keys on a loopback address only")
        if self.insecure_no_auth and not is_loopback(self.host):
            raise InvalidArgumentError(f"--insecure-no-auth refuses to listen on {self.host!r}: only on a loopback "
                                       "address (127.0.0.1, ::1)")
        if not 0.0 < float(self.far) < 1.0:
            raise InvalidArgumentError(f"--far must lie in (0, 1), got {self.far!r}")
        if not self.max_upload_mb > 0 or self.max_pixels < 1 or self.workers < 0 or self.threads < 0 or self.queue < 0:
            raise InvalidArgumentError("upload cap, pixel cap, workers, threads and queue must be positive")
        if not 0 < self.port < 65536:
            raise InvalidArgumentError(f"--port must be 1-65535, got {self.port}")

    @property
    def n_workers(self) -> int:
        return self.workers or default_workers()

    @property
    def n_threads(self) -> int:
        """Intra-op threads per worker: workers × threads never exceed the cores (oversubscribed
        threads on a busy machine made detection tens of times slower)."""
        return self.threads or max(1, default_workers() // self.n_workers)

    @property
    def n_queue(self) -> int:
        # Enough for a few dozen waiting clients (a second or two of work on 2 cores), still bounded.
        return self.queue or max(32, 4 * self.n_workers)

    @property
    def is_postgres(self) -> bool:
        return self.gallery.startswith(("postgresql://", "postgres://"))

    @property
    def audit_path(self) -> Path:
        if self.audit_log:
            return Path(self.audit_log)
        return Path("pifr-audit.jsonl") if self.is_postgres else Path(self.gallery + ".audit.jsonl")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def key_table(self) -> Dict[str, ApiKey]:
        return {k.name: k for k in self.api_keys}
