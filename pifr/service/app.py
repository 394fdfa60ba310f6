"""The FastAPI app: API v1, auth, errors as JSON, upload caps, audit and metrics.

Every failure answers ``{"error": {"type", "message"}, "request_id"}`` with a status mapped from
pifr's typed errors (:data:`STATUS`); nothing a client sends produces a traceback or a 500.
"""
from __future__ import annotations

import dataclasses

import contextlib
import logging
import re
import time
import unicodedata
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Tuple

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import errors as E
from ..image import load_image
from .audit import AuditLog
from .auth import HEADER, AuthError, Principal, authenticate, authorize
from .config import ServiceConfig
from .metrics import Metrics
from .pool import BoundedPool, BusyError
from .recognizer import Recogniser
from .store import AddResult, FileStore, Store

log = logging.getLogger("pifr.service")

#: HTTP status of each pifr error (the most specific class listed wins); others: 500.
STATUS: Tuple[Tuple[type, int], ...] = (
    (E.ImageTooLargeError, 413), (E.InvalidImageError, 415), (E.NoFaceError, 422), (E.FitError, 422),
    (E.NoThresholdError, 500), (E.InvalidArgumentError, 422), (E.ShapeError, 422), (E.InvalidPolicyError, 422),
)
#: Images one request may carry.
MAX_IMAGES = 16
#: Subject names: 1-64 characters, letters or digits first, then letters, digits, space, _ . ' -
NAME_MAX = 64
_NAME = re.compile(r"^[^\W_][\w .'-]*$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
STATIC = Path(__file__).with_name("static")


class ApiError(Exception):
    """An answer other than success: ``status``, ``type`` and ``message`` go into the JSON body."""

    def __init__(self, status: int, type_: str, message: str, headers: Optional[Dict[str, str]] = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.headers, self.extra = status, type_, message, headers or {}, extra


class BodyTooLarge(Exception):
    """The body streamed past the upload cap (no or a false Content-Length)."""


def error_response(request: Request, status: int, type_: str, message: str, headers: Optional[Dict[str, str]] = None,
                   **extra: Any) -> JSONResponse:
    body = {"error": {"type": type_, "message": message}, "request_id": getattr(request.state, "request_id", None), **extra}
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(e: E.PifrError) -> int:
    for cls, status in STATUS:
        if isinstance(e, cls):
            return status
    return 500


def check_subject(name: str) -> str:
    """A subject name: 1-64 characters; letters or digits first; then letters, digits, spaces
    and ``_ . ' -``; NFC-normalised. Raises ApiError 422."""
    name = unicodedata.normalize("NFC", name)
    if not 1 <= len(name) <= NAME_MAX or not _NAME.match(name) or name != name.strip():
        raise ApiError(422, "InvalidSubjectName", f"subject names are 1-{NAME_MAX} characters: letters or digits first, then "
                       "letters, digits, spaces and _ . ' - (no leading or trailing space)")
    return name


def _ext(data: bytes) -> str:
    return "jpg" if data[:2] == b"\xff\xd8" else "png" if data[:4] == b"\x89PNG" else "img"


class Edge:
    """Outermost ASGI layer: a request id, the upload cap (Content-Length, then the bytes
    actually streamed), and per-route metrics."""

    def __init__(self, app: Any, max_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_bytes, self.metrics = app, max_bytes, metrics

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        rid = headers.get("x-request-id", "")
        rid = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        status = [500]

        async def send_wrapped(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                msg = dict(msg, headers=list(msg.get("headers", [])) + [(b"x-request-id", rid.encode())])
            await send(msg)

        try:
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                too_big = length.isdigit()
                body = (b'{"error":{"type":"%s","message":"%s"},"request_id":"%s"}' % (
                    b"PayloadTooLarge" if too_big else b"BadRequest",
                    (f"the request body is larger than the upload cap of {self.max_bytes} bytes" if too_big
                     else "Content-Length is not a number").encode(), rid.encode()))
                await send_wrapped({"type": "http.response.start", "status": 413 if too_big else 400,
                                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                                (b"content-length", str(len(body)).encode())]})
                await send_wrapped({"type": "http.response.body", "body": body})
                return
            seen = [0]

            async def receive_counted() -> dict:
                msg = await receive()
                if msg["type"] == "http.request":
                    seen[0] += len(msg.get("body", b""))
                    if seen[0] > self.max_bytes:
                        raise BodyTooLarge(f"the request body is larger than the upload cap of {self.max_bytes} bytes")
                return msg

            await self.app(scope, receive_counted, send_wrapped)
        finally:
            route = scope.get("route")
            self.metrics.observe(getattr(route, "path", "unmatched"), scope.get("method", ""), status[0],
                                 time.perf_counter() - t0)


def _multipart_doc(fields: Dict[str, bool]) -> dict:
    props = {k: ({"type": "array", "items": {"type": "string", "format": "binary"}} if many
                 else {"type": "string", "format": "binary"}) for k, many in fields.items()}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "properties": props, "required": list(fields)}}}}}


def open_store(gallery: str, far: float, embedder: Optional[str] = None, poll_s: float = 0.5) -> Store:
    """A :class:`~pifr.service.store.FileStore` for a path, a
    :class:`~pifr.service.postgres.PostgresStore` for a ``postgresql://`` URL."""
    if gallery.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(gallery, far, embedder, poll_s=poll_s)
    return FileStore(gallery, far, embedder)


def create_app(config: ServiceConfig, *, recogniser: Any = None, store: Optional[Store] = None) -> FastAPI:
    """The service for ``config``. ``recogniser`` (default :class:`Recogniser`) and ``store``
    (default :func:`open_store` of ``config.gallery``) may be replaced (tests)."""
    store = store or open_store(config.gallery, config.far, config.embedder, poll_s=config.poll_s)
    recogniser = recogniser or Recogniser()
    pool = BoundedPool(config.n_workers, config.n_queue)
    metrics = Metrics()
    audit = AuditLog(config.audit_path, int(config.audit_max_mb * 1024 * 1024), config.audit_backups, config.keep_probes)
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown()
        audit.close()
        store.close()

    app = FastAPI(lifespan=lifespan, title="pifr access control", version="1",
                  description="Enrol people from photos and decide, at a stated false-accept rate per probe, whether a "
                              "face at the door is one of them. Send the API key in the X-API-Key header.")
    app.state.store, app.state.recogniser, app.state.pool = store, recogniser, pool
    app.state.metrics, app.state.audit, app.state.config = metrics, audit, config
    api_key = APIKeyHeader(name=HEADER, auto_error=False, description="admin or recognize key")

    # ------------------------------------------------------------------ errors
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return error_response(request, e.status, e.type, e.message, e.headers, **e.extra)

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, e: AuthError) -> JSONResponse:
        if e.status == 401:
            return error_response(request, 401, "Unauthorized", str(e), {"WWW-Authenticate": HEADER})
        return error_response(request, 403, "Forbidden", str(e))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, e: BodyTooLarge) -> JSONResponse:
        return error_response(request, 413, "PayloadTooLarge", str(e), {"Connection": "close"})

    @app.exception_handler(BusyError)
    async def _busy(request: Request, e: BusyError) -> JSONResponse:
        metrics.rejected_busy.inc()
        return error_response(request, 503, "Busy", f"{e}; retry shortly", {"Retry-After": "1"})

    @app.exception_handler(E.PifrError)
    async def _pifr_error(request: Request, e: E.PifrError) -> JSONResponse:
        status = status_of(e)
        if status >= 500:
            log.error("request %s: %s: %s", getattr(request.state, "request_id", "?"), type(e).__name__, e)
        return error_response(request, status, type(e).__name__, str(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(e.status_code, "HTTPError")
        return error_response(request, e.status_code, kind, str(e.detail), getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        msg = "; ".join(f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}" for err in e.errors())
        return error_response(request, 422, "ValidationError", msg or "invalid request")

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", "?")
        log.exception("request %s failed", rid)
        return error_response(request, 500, "InternalError", f"internal error (request id {rid}); see the server log")

    # ------------------------------------------------------------------ auth
    def need(scope: str) -> Callable[..., Principal]:
        def dep(key: Optional[str] = Security(api_key)) -> Principal:
            who = authenticate(key, config.api_keys, config.insecure_no_auth)
            return authorize(who, scope)

        return dep

    # ------------------------------------------------------------------ inputs
    async def read_images(request: Request, fields: Tuple[str, ...], *, one_each: bool = False) -> Dict[str, List[bytes]]:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise ApiError(415, "UnsupportedMediaType", "send the images as multipart/form-data fields "
                           f"({', '.join(repr(f) for f in fields)})")
        try:
            form = await request.form(max_files=MAX_IMAGES, max_fields=MAX_IMAGES)
        except BodyTooLarge:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed body is the client's: 422 with what the parser said
            raise ApiError(422, "InvalidMultipart", f"could not parse the multipart body ({e})") from e
        out: Dict[str, List[bytes]] = {}
        for f in fields:
            items = form.getlist(f)
            if not items:
                raise ApiError(422, "MissingField", f"no {f!r} field: send the image(s) as multipart file field {f!r}")
            if one_each and len(items) != 1:
                raise ApiError(422, "InvalidField", f"send exactly one {f!r} image")
            if len(items) > MAX_IMAGES:
                raise ApiError(422, "TooManyImages", f"at most {MAX_IMAGES} images per request")
            datas = []
            for it in items:
                if not isinstance(it, UploadFile):
                    raise ApiError(422, "InvalidField", f"field {f!r} must be a file upload, not text")
                datas.append(await it.read())
            out[f] = datas
        await form.close()
        return out

    def decode(data: bytes, name: str) -> Any:
        return load_image(data, max_pixels=config.max_pixels) if data else _empty(name)

    def _empty(name: str) -> Any:
        raise E.InvalidImageError(f"{name}: empty file")

    def snapshot() -> Any:
        g = store.snapshot()
        metrics.subjects.set(len(g))
        metrics.templates.set(g.templates)
        return g

    async def on_pool(fn: Callable[[], Any]) -> Any:
        metrics.queue.set(pool.admitted + 1)
        try:
            return await pool.run(fn)
        finally:
            metrics.queue.set(pool.admitted)

    # ------------------------------------------------------------------ routes
    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        """Liveness: 200 when the gallery can be read (no key)."""
        try:
            store.snapshot()
        except E.PifrError as e:
            raise ApiError(503, "GalleryUnavailable", f"{type(e).__name__}: {e}") from e
        return {"status": "ok", "workers": pool.workers, "threads_per_worker": config.n_threads,
                "queue": pool.limit - pool.workers}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics_text(who: Principal = Depends(need("recognize"))) -> Response:
        """Prometheus text (any key)."""
        snapshot()
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    @app.post("/v1/subjects/{name}/faces", status_code=201, tags=["subjects"],
              openapi_extra=_multipart_doc({"image": True}))
    async def enrol(name: str, request: Request, who: Principal = Depends(need("admin"))) -> dict:
        """Enrol one or more photos (``image`` fields) of subject ``name`` (admin). Bad photos are
        listed in ``rejected`` by index; the good ones are kept."""
        name = check_subject(name)
        files = (await read_images(request, ("image",)))["image"]

        def job() -> Tuple[AddResult, List[dict]]:
            like = snapshot()
            arrays, index, rejected = [], [], []
            for i, data in enumerate(files):
                try:
                    arrays.append(decode(data, f"image {i}"))
                    index.append(i)
                except E.PifrError as e:
                    rejected.append({"index": i, "error": {"type": type(e).__name__, "message": str(e)}})
            templates, bad = recogniser.templates(like, name, arrays)
            rejected += [{"index": index[i], "error": {"type": t, "message": m}} for i, t, m in bad]
            templates = [dataclasses.replace(t, image=index[t.image]) for t in templates]
            res = store.add_templates(name, templates) if templates else AddResult(0, ())
            rejected += [{"index": i, "error": {"type": "DuplicateImage", "message": "these pixels are already enrolled"}}
                         for i in res.duplicates]
            return res, sorted(rejected, key=lambda r: r["index"])

        res, rejected = await on_pool(job)
        rid = request.state.request_id
        audit.write("enrol", rid, who.name, subject=name, added=res.added, images=len(files), rejected=len(rejected))
        if res.added == 0:
            raise ApiError(422, "NothingEnrolled", f"none of the {len(files)} images gave a new template", subject=name,
                           added=0, rejected=rejected)
        return {"subject": name, "added": res.added, "rejected": rejected, "request_id": rid}

    @app.get("/v1/subjects", tags=["subjects"])
    async def subjects(who: Principal = Depends(need("recognize"))) -> dict:
        """Every enrolled subject and its number of templates."""
        g = await run_in_threadpool(snapshot)
        return {"subjects": [{"name": str(n), "templates": c} for n, c in sorted(g.template_counts().items())]}

    @app.delete("/v1/subjects/{name}", tags=["subjects"])
    async def delete(name: str, request: Request, who: Principal = Depends(need("admin"))) -> dict:
        """Remove every template of ``name`` (admin); 404 when unknown."""
        n = await run_in_threadpool(store.remove_subject, unicodedata.normalize("NFC", name))
        if n == 0:
            raise ApiError(404, "UnknownSubject", f"no subject {name[:NAME_MAX]!r} is enrolled")
        audit.write("delete", request.state.request_id, who.name, subject=name, removed=n)
        return {"subject": name, "removed": n}

    @app.post("/v1/identify", tags=["recognition"], openapi_extra=_multipart_doc({"image": True}))
    async def identify(request: Request, who: Principal = Depends(need("recognize"))) -> dict:
        """Decide one door event from one or more ``image`` fields: accept (and who) or reject, at
        the server's false-accept rate per probe for the gallery's current size."""
        files = (await read_images(request, ("image",)))["image"]

        def job() -> dict:
            g = snapshot()
            arrays = [decode(d, f"image {i}") for i, d in enumerate(files)]
            return recogniser.identify(g, arrays)

        rec = await on_pool(job)
        rid = request.state.request_id
        kept = audit.keep(rid, files, [_ext(d) for d in files])
        metrics.decisions.labels("identify", rec["decision"]).inc()
        audit.write("identify", rid, who.name, subject=rec["subject"], candidate=rec["candidate"], score=rec["score"],
                    threshold=rec["threshold"], far=rec["far"], decision=rec["decision"], faces=len(rec["faces"]),
                    images=len(files), **({"probes": kept} if kept else {}))
        return {**rec, "request_id": rid}

    @app.post("/v1/verify", tags=["recognition"], openapi_extra=_multipart_doc({"a": False, "b": False}))
    async def verify(request: Request, who: Principal = Depends(need("recognize"))) -> dict:
        """Are the faces in ``a`` and ``b`` the same person? The record of ``pifr.verify(...).to_dict()``."""
        files = await read_images(request, ("a", "b"), one_each=True)

        def job() -> dict:
            like = snapshot()
            return recogniser.verify(decode(files["a"][0], "a"), decode(files["b"][0], "b"), like)

        rec = await on_pool(job)
        rid = request.state.request_id
        decision = "accept" if rec["same"] else "reject"
        kept = audit.keep(rid, [files["a"][0], files["b"][0]], [_ext(files["a"][0]), _ext(files["b"][0])])
        metrics.decisions.labels("verify", decision).inc()
        audit.write("verify", rid, who.name, subject=None, score=rec["score"], threshold=rec["threshold"],
                    decision=decision, faces=len(rec.get("faces", [])), **({"probes": kept} if kept else {}))
        return rec

    app.add_middleware(Edge, max_bytes=config.max_upload_bytes, metrics=metrics)
    return app
