"""The PostgreSQL store (``pifr serve --gallery postgresql://…``; psycopg 3).

Tables: ``pifr_gallery`` (one row: the gallery's embedder and policy, and a change counter),
``pifr_subjects`` and ``pifr_templates`` (one row per template: the float32 vector, the decoded
pixels' hash — unique, so the same photo is never enrolled twice —, and its view provenance).
Every write is one transaction that first locks the ``pifr_gallery`` row (writers take turns) and
ends by incrementing the counter. Each server polls the counter at most every ``poll_s`` seconds
(default 0.5 s, before a request) and reloads its in-memory index when it moved, so an enrolment on
one server is found by every other within a second. Decisions are the file store's: the same
templates make the same :class:`pifr.Gallery`.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Hashable, Optional, Sequence

import numpy as np

from ..errors import DependencyError, GalleryError
from ..gallery import Gallery
from .store import AddResult, Store, Template, fill_gallery, gallery_config

log = logging.getLogger("pifr.service")

SCHEMA = """
CREATE TABLE IF NOT EXISTS pifr_gallery (
    id integer PRIMARY KEY CHECK (id = 1),
    config jsonb NOT NULL,
    version bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pifr_subjects (
    name text PRIMARY KEY,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pifr_templates (
    id bigserial PRIMARY KEY,
    subject text NOT NULL REFERENCES pifr_subjects(name) ON DELETE CASCADE,
    embedding bytea NOT NULL,
    hash text NOT NULL UNIQUE,
    view text,
    yaw real,
    created timestamptz NOT NULL DEFAULT now()
);
-- A database made before faces' yaws were kept: its templates' yaws are unknown (NULL).
ALTER TABLE pifr_templates ADD COLUMN IF NOT EXISTS yaw real;
CREATE INDEX IF NOT EXISTS pifr_templates_subject ON pifr_templates (subject);
"""
#: Any fixed number: schema creation by several servers starting at once takes turns on it.
_INIT_LOCK = 0x70696672


def describe_url(url: str) -> str:
    """``database D on H:P`` — never the password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        d = conninfo_to_dict(url)
    except Exception:  # noqa: BLE001 - only for a log line
        return "postgresql"
    return f"postgresql database {d.get('dbname', '?')} on {d.get('host', 'localhost')}:{d.get('port', 5432)}"


class PostgresStore(Store):
    """Subjects and templates as rows (module doc).

    Args:
        url: a libpq connection URL.
        far: the per-probe false-accept rate the default threshold holds.
        embedder: the embedder of a new gallery (``None``: pifr's default); an existing one keeps its own.
        poll_s: seconds between checks of the change counter.

    Raises:
        DependencyError: psycopg is not installed. GalleryError: the database cannot be reached, or
        holds a gallery made with other embedder weights.
    """

    def __init__(self, url: str, far: float, embedder: Optional[str] = None, poll_s: float = 0.5) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            raise DependencyError("a PostgreSQL gallery needs psycopg: pip install 'pifr[serve]'") from e
        self.url, self.far, self.poll_s = url, float(far), float(poll_s)
        self.description = describe_url(url)
        self._lock = threading.RLock()
        self._conn: Any = None
        self._checked = 0.0
        self._seen: Hashable = None
        self._version: Hashable = None
        self._snap: Optional[Gallery] = None
        like = Gallery(embedder, far_per_probe=self.far)
        cfg = {**gallery_config(like), "embedder_sha256": like.embedder_sha256, "dim": like.dim}
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK,))
            cur.execute(SCHEMA)
            cur.execute("INSERT INTO pifr_gallery (id, config) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
                        (json.dumps(cfg),))
            cur.execute("SELECT config FROM pifr_gallery WHERE id = 1")
            stored = cur.fetchone()[0]
        if stored["embedder"] != like.embedder or stored.get("frontalize") != like.frontalize or \
                stored.get("frontalizer") != like.frontalizer:
            like = Gallery(stored["embedder"], detector=stored.get("detector"), frontalize=stored.get("frontalize", "auto"),
                           frontalizer=stored.get("frontalizer"), yaw_threshold=stored.get("yaw_threshold"),
                           fusion_weight=stored.get("fusion_weight"), far_per_probe=self.far)
        if stored.get("embedder_sha256") and like.embedder_sha256 != stored["embedder_sha256"]:
            raise GalleryError(f"{self.description}: made with {stored['embedder']} weights "
                               f"{stored['embedder_sha256'][:12]}…, but the installed ones are {like.embedder_sha256[:12]}…")
        self._like = like
        self.snapshot()

    # ------------------------------------------------------------------ connection
    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as e:
            raise GalleryError(f"{self.description}: cannot connect ({type(e).__name__}: {str(e).strip()[:200]})") from e

    class _Tx:
        def __init__(self, store: "PostgresStore", repeatable: bool) -> None:
            self.store, self.repeatable = store, repeatable

        def __enter__(self) -> Any:
            import psycopg

            s = self.store
            s._lock.acquire()
            try:
                if s._conn is None or s._conn.closed:
                    s._conn = s._connect()
                self._tx = s._conn.transaction()
                self._tx.__enter__()
                self._cur = s._conn.cursor()
                if self.repeatable:
                    self._cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return self._cur
            except psycopg.Error as e:
                s._drop()
                s._lock.release()
                raise GalleryError(f"{s.description}: {type(e).__name__}: {str(e).strip()[:200]}") from e
            except BaseException:
                s._lock.release()
                raise

        def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
            import psycopg

            s = self.store
            try:
                self._cur.close()
                self._tx.__exit__(et, ev, tb)
            except psycopg.Error as e:
                s._drop()
                if et is None:
                    raise GalleryError(f"{s.description}: {type(e).__name__}: {str(e).strip()[:200]}") from e
            finally:
                s._lock.release()
            if isinstance(ev, psycopg.Error):
                s._drop()  # a broken connection is reopened by the next call
                raise GalleryError(f"{s.description}: {type(ev).__name__}: {str(ev).strip()[:200]}") from ev
            return False

    def _tx(self, repeatable: bool = False) -> "PostgresStore._Tx":
        """A transaction on this store's connection (one at a time per process); psycopg errors
        become GalleryError and drop the connection."""
        return PostgresStore._Tx(self, repeatable)

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - it is being thrown away
                pass
        self._conn = None

    # ------------------------------------------------------------------ Store
    def version(self) -> Hashable:
        now = time.monotonic()
        if now - self._checked < self.poll_s and self._seen is not None:
            return self._seen
        with self._tx() as cur:
            cur.execute("SELECT version FROM pifr_gallery WHERE id = 1")
            self._seen = int(cur.fetchone()[0])
        self._checked = now
        return self._seen

    def snapshot(self) -> Gallery:
        v = self.version()
        if self._snap is not None and v == self._version:
            return self._snap
        with self._tx(repeatable=True) as cur:  # the counter and the rows of one moment
            cur.execute("SELECT version FROM pifr_gallery WHERE id = 1")
            v = int(cur.fetchone()[0])
            cur.execute("SELECT subject, embedding, hash, view, yaw FROM pifr_templates ORDER BY id")
            rows = cur.fetchall()
        g = Gallery(self._like.embedder, detector=self._like.detector, frontalize=self._like.frontalize,
                    frontalizer=self._like.frontalizer, yaw_threshold=self._like.yaw_threshold,
                    fusion_weight=self._like.fusion_weight, far_per_probe=self.far)
        emb = np.frombuffer(b"".join(bytes(r[1]) for r in rows), np.float32).reshape(-1, g.dim) if rows \
            else np.zeros((0, g.dim), np.float32)
        fill_gallery(g, emb.copy(), [r[0] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows])
        with self._lock:
            if self._version is None or v >= self._version:
                self._snap, self._version = g, v
            log.info("%s loaded: version %d, %d subjects, %d templates", self.description, v, len(g), g.templates)
            return self._snap

    def _bump(self, cur: Any) -> None:
        cur.execute("UPDATE pifr_gallery SET version = version + 1 WHERE id = 1")
        self._checked = 0.0  # our own write: look again at the next request

    def add_templates(self, name: str, templates: Sequence[Template]) -> AddResult:
        dups = []
        added = 0
        with self._tx() as cur:
            cur.execute("SELECT version FROM pifr_gallery WHERE id = 1 FOR UPDATE")  # writers take turns
            cur.execute("INSERT INTO pifr_subjects (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,))
            for t in templates:
                vec = np.ascontiguousarray(t.vector, np.float32)
                if vec.shape != (self._like.dim,):
                    raise GalleryError(f"template of shape {vec.shape}, the gallery's are ({self._like.dim},)")
                yaw = None if t.yaw != t.yaw else float(t.yaw)  # NaN: unknown
                cur.execute("INSERT INTO pifr_templates (subject, embedding, hash, view, yaw) VALUES (%s, %s, %s, %s, %s) "
                            "ON CONFLICT (hash) DO NOTHING RETURNING id", (name, vec.tobytes(), t.hash, t.view, yaw))
                if cur.fetchone() is None:
                    dups.append(t.image)
                else:
                    added += 1
            if added:
                self._bump(cur)
            else:  # no subject without templates
                cur.execute("DELETE FROM pifr_subjects s WHERE name = %s AND NOT EXISTS "
                            "(SELECT 1 FROM pifr_templates t WHERE t.subject = s.name)", (name,))
        return AddResult(added, tuple(sorted(set(dups))))

    def remove_subject(self, name: str) -> int:
        with self._tx() as cur:
            cur.execute("SELECT version FROM pifr_gallery WHERE id = 1 FOR UPDATE")
            cur.execute("DELETE FROM pifr_templates WHERE subject = %s", (name,))
            n = cur.rowcount
            cur.execute("DELETE FROM pifr_subjects WHERE name = %s", (name,))
            if n:
                self._bump(cur)
        return max(0, n)

    def close(self) -> None:
        with self._lock:
            self._drop()
