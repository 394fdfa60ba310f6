"""pifr serve's HTTP API offline: auth and scopes, error bodies and statuses, upload and pixel
caps, subject names, audit lines, metrics, the full-queue 503 — with a fake recogniser (colour of
the image = identity) — and one enrol/identify with the real models on the shipped photos."""
from __future__ import annotations

import hashlib
import io
import json
import threading
import warnings
from urllib.parse import quote

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
with warnings.catch_warnings():  # newer Starlette prefers httpx2 for its TestClient; httpx works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from pifr.errors import InvalidArgumentError, NoFaceError  # noqa: E402
from pifr.service import ServiceConfig, create_app, parse_keys  # noqa: E402
from pifr.service.recognizer import POLICY_POOLED, decision_record  # noqa: E402
from pifr.service.store import Template  # noqa: E402

from tests.conftest import EXAMPLES  # noqa: E402

ADMIN, RECO = "admin-key-0123456789", "recognize-key-0123456789"
KEYS = parse_keys(f"admin:{ADMIN},door=recognize:{RECO}")


def png(color=(200, 30, 30), size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class FakeRecogniser:
    """An image's mean colour is its identity (a black image has no face); no models."""

    def __init__(self, block: threading.Event = None) -> None:
        self.block = block
        self.started = threading.Semaphore(0)

    @staticmethod
    def _vec(arr, dim):
        if arr.mean() < 5:
            raise NoFaceError("no face found")
        seed = int(hashlib.sha256(np.round(arr.reshape(-1, 3).mean(0)).astype(np.int64).tobytes()).hexdigest()[:8], 16)
        v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def templates(self, like, name, images):
        out, bad = [], []
        for i, arr in enumerate(images):
            try:
                out.append(Template(i, self._vec(arr, like.dim), hashlib.sha256(arr.tobytes()).hexdigest(), "raw"))
            except NoFaceError as e:
                bad.append((i, "NoFaceError", str(e)))
        return out, bad

    def identify(self, g, images):
        if self.block is not None:
            self.started.release()
            assert self.block.wait(20)
        v = self._vec(images[0], g.dim)
        score = subject = None
        if g.templates:
            m = g.search_embedding(v, 1)[0]
            score, subject = m.score, str(m.identity)
        rec = decision_record(g, score, subject, 0.0)
        rec["faces"] = [{"image": 0, "bbox": [0, 0, 10, 10], "score": 1.0, "yaw": 0.0, "used": True}]
        rec["policy"] = POLICY_POOLED
        return rec

    def verify(self, a, b, like):
        s = float(self._vec(a, like.dim) @ self._vec(b, like.dim))
        return {"same": s >= 0.9, "score": s, "threshold": 0.9, "faces": [{}, {}]}


def make(tmp_path, recogniser="fake", **kw):
    cfg = dict(gallery=str(tmp_path / "g.gallery"), api_keys=KEYS, audit_log=str(tmp_path / "audit.jsonl"), workers=1)
    cfg.update(kw)
    app = create_app(ServiceConfig(**cfg), recogniser=FakeRecogniser() if recogniser == "fake" else recogniser)
    return app, TestClient(app, raise_server_exceptions=False)


def H(key):
    return {"X-API-Key": key}


def files(*blobs, field="image"):
    return [(field, (f"f{i}.png", b, "image/png")) for i, b in enumerate(blobs)]


def check_error(r, status, kind=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"type", "message"} and body["error"]["message"]
    assert "Traceback" not in r.text
    if kind:
        assert body["error"]["type"] == kind, body
    return body


def test_keys_are_parsed_named_and_never_echoed():
    keys = parse_keys("admin:AAAAAAAAAAAAAAAA1\nalice=recognize:BBBBBBBBBBBBBBBB2 # door\n")
    assert [(k.name, k.scope) for k in keys] == [("admin-1", "admin"), ("alice", "recognize")]
    assert "AAAA" not in repr(keys)
    for bad in ("root:AAAAAAAAAAAAAAAAAA", "admin:short", "admin AAAAAAAAAAAAAAAAAAA",
                "admin:AAAAAAAAAAAAAAAAAA,admin:AAAAAAAAAAAAAAAAAA"):
        with pytest.raises(InvalidArgumentError) as e:
            parse_keys(bad)
        assert "AAAAAAAAAAAA" not in str(e.value)


def test_no_keys_refuses_to_start_and_no_auth_is_loopback_only(tmp_path):
    with pytest.raises(InvalidArgumentError, match="no API keys"):
        ServiceConfig(gallery=str(tmp_path / "g"))
    with pytest.raises(InvalidArgumentError, match="loopback"):
        ServiceConfig(gallery=str(tmp_path / "g"), insecure_no_auth=True, host="0.0.0.0")
    _, c = make(tmp_path, api_keys=(), insecure_no_auth=True, host="::1")
    assert c.post("/v1/subjects/ann/faces", files=files(png())).status_code == 201
    assert c.get("/v1/subjects").json() == {"subjects": [{"name": "ann", "templates": 1}]}


def test_auth_401_403_and_scopes(tmp_path):
    _, c = make(tmp_path)
    assert c.get("/healthz").json()["status"] == "ok"  # no key needed
    check_error(c.get("/v1/subjects"), 401, "Unauthorized")
    r = c.get("/v1/subjects", headers=H("x" * 20))
    check_error(r, 401, "Unauthorized")
    assert r.headers["www-authenticate"] == "X-API-Key"
    check_error(c.post("/v1/subjects/ann/faces", files=files(png()), headers=H(RECO)), 403, "Forbidden")
    check_error(c.delete("/v1/subjects/ann", headers=H(RECO)), 403, "Forbidden")
    assert c.post("/v1/subjects/ann/faces", files=files(png()), headers=H(ADMIN)).status_code == 201
    for key in (RECO, ADMIN):  # admin may also recognise
        assert c.get("/v1/subjects", headers=H(key)).status_code == 200
        assert c.post("/v1/identify", files=files(png()), headers=H(key)).json()["decision"] == "accept"
    check_error(c.get("/metrics"), 401)


def test_enrol_keeps_good_photos_and_reports_bad_ones(tmp_path):
    _, c = make(tmp_path)
    r = c.post("/v1/subjects/ann/faces", headers=H(ADMIN),
               files=files(png(), b"not an image", png((0, 0, 0)), png()))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["subject"] == "ann" and body["added"] == 1
    assert [(x["index"], x["error"]["type"]) for x in body["rejected"]] == [
        (1, "InvalidImageError"), (2, "NoFaceError"), (3, "DuplicateImage")]
    # Nothing usable: 422, still a JSON error with the per-image reasons.
    body = check_error(c.post("/v1/subjects/bob/faces", headers=H(ADMIN), files=files(b"junk")), 422, "NothingEnrolled")
    assert body["rejected"][0]["index"] == 0
    assert c.get("/v1/subjects", headers=H(RECO)).json() == {"subjects": [{"name": "ann", "templates": 1}]}


def test_identify_verify_delete(tmp_path):
    _, c = make(tmp_path)
    r = c.post("/v1/identify", files=files(png()), headers=H(RECO)).json()
    assert r["decision"] == "reject" and r["score"] is None  # empty gallery: nobody to accept
    c.post("/v1/subjects/ann/faces", files=files(png((10, 200, 10))), headers=H(ADMIN))
    c.post("/v1/subjects/bob/faces", files=files(png((10, 10, 200))), headers=H(ADMIN))
    r = c.post("/v1/identify", files=files(png((10, 200, 10))), headers=H(RECO)).json()
    assert (r["decision"], r["subject"], r["far"], r["policy"]) == ("accept", "ann", 0.01, POLICY_POOLED)
    assert r["score"] >= r["threshold"] and r["gallery"] == {"subjects": 2, "templates": 2}
    r = c.post("/v1/identify", files=files(png((90, 90, 90))), headers=H(RECO)).json()
    assert r["decision"] == "reject" and r["subject"] is None and r["score"] < r["threshold"]
    r = c.post("/v1/verify", files=files(png(), field="a") + files(png(), field="b"), headers=H(RECO))
    assert r.json()["same"] is True
    check_error(c.post("/v1/verify", files=files(png(), field="a"), headers=H(RECO)), 422, "MissingField")
    assert c.delete("/v1/subjects/ann", headers=H(ADMIN)).json() == {"subject": "ann", "removed": 1}
    check_error(c.delete("/v1/subjects/ann", headers=H(ADMIN)), 404, "UnknownSubject")
    assert [s["name"] for s in c.get("/v1/subjects", headers=H(RECO)).json()["subjects"]] == ["bob"]


def test_bad_inputs_get_typed_json_errors_never_500(tmp_path):
    _, c = make(tmp_path, max_pixels=100 * 100)
    c.post("/v1/subjects/ann/faces", files=files(png()), headers=H(ADMIN))
    check_error(c.post("/v1/identify", files=files(b"GIF89a garbage"), headers=H(RECO)), 415, "InvalidImageError")
    check_error(c.post("/v1/identify", content=png(), headers={**H(RECO), "content-type": "image/png"}), 415,
                "UnsupportedMediaType")
    check_error(c.post("/v1/identify", files=files(png((0, 0, 0))), headers=H(RECO)), 422, "NoFaceError")
    check_error(c.post("/v1/identify", files=files(png(size=(200, 200))), headers=H(RECO)), 413, "ImageTooLargeError")
    check_error(c.post("/v1/identify", data={"image": "text"}, headers=H(RECO)), 415, "UnsupportedMediaType")
    check_error(c.post("/v1/identify", data={"image": "text"}, files=files(png(), field="x"), headers=H(RECO)), 422,
                "InvalidField")
    check_error(c.post("/v1/identify", files=files(png(), field="other"), headers=H(RECO)), 422, "MissingField")
    check_error(c.post("/v1/identify", files=files(*[png()] * 17), headers=H(RECO)), 422)
    check_error(c.post("/v1/identify", content=b"--x\r\ngarbage", headers={**H(RECO), "content-type": "multipart/form-data; boundary=x"}), 422)
    check_error(c.get("/v2/nothing"), 404, "NotFound")
    check_error(c.put("/v1/identify", headers=H(RECO)), 405, "MethodNotAllowed")
    rng = np.random.default_rng(0)
    for _ in range(20):  # random bytes as an image: never a 500
        r = c.post("/v1/identify", files=files(rng.bytes(int(rng.integers(0, 3000)))), headers=H(RECO))
        assert r.status_code in (413, 415, 422), r.text


@pytest.mark.parametrize("name", ["  ann", "ann ", "a" * 65, "x\u0000y", "<script>", "_x", "a;b", "ann\nbob"])
def test_bad_subject_names_are_refused(tmp_path, name):
    _, c = make(tmp_path)
    check_error(c.post(f"/v1/subjects/{quote(name, safe='')}/faces", files=files(png()), headers=H(ADMIN)), 422, "InvalidSubjectName")


def test_good_subject_names(tmp_path):
    _, c = make(tmp_path)
    for i, name in enumerate(["Zoë O'Brien-Smith", "李小龙", "a" * 64, "emp.42_b"]):
        r = c.post(f"/v1/subjects/{name}/faces", files=files(png((i * 40 + 20, 9, 9))), headers=H(ADMIN))
        assert r.status_code == 201 and r.json()["subject"] == name


def test_upload_cap_by_content_length_and_by_streamed_bytes(tmp_path):
    _, c = make(tmp_path, max_upload_mb=0.01)  # 10,485 bytes
    big = png(size=(64, 64)) + b"\0" * 20000
    check_error(c.post("/v1/identify", files=files(big), headers=H(RECO)), 413, "PayloadTooLarge")

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(40):
            yield b"x" * 1000

    r = c.post("/v1/identify", content=chunks(), headers={**H(RECO), "content-type": "multipart/form-data; boundary=b"})
    check_error(r, 413, "PayloadTooLarge")


def test_audit_lines_name_the_key_never_the_key(tmp_path):
    _, c = make(tmp_path, keep_probes=str(tmp_path / "probes"))
    c.post("/v1/subjects/ann/faces", files=files(png()), headers=H(ADMIN))
    rid = c.post("/v1/identify", files=files(png()), headers=H(RECO)).json()["request_id"]
    c.post("/v1/identify", files=files(png((1, 99, 1))), headers=H(RECO))
    text = (tmp_path / "audit.jsonl").read_text()
    assert ADMIN not in text and RECO not in text
    lines = [json.loads(x) for x in text.splitlines()]
    assert [x["event"] for x in lines] == ["enrol", "identify", "identify"]
    ident = lines[1]
    assert ident["request_id"] == rid and ident["key"] == "door" and ident["subject"] == "ann"
    assert ident["decision"] == "accept" and ident["faces"] == 1 and ident["score"] >= ident["threshold"]
    assert lines[2]["decision"] == "reject" and lines[2]["subject"] is None
    assert ident["probes"] == [f"{rid}-0.png"] and (tmp_path / "probes" / f"{rid}-0.png").read_bytes() == png()


def test_audit_without_keep_probes_stores_no_image_and_rotates(tmp_path):
    _, c = make(tmp_path, audit_max_mb=0.001)  # ~1 kB
    c.post("/v1/subjects/ann/faces", files=files(png()), headers=H(ADMIN))
    for _ in range(8):
        c.post("/v1/identify", files=files(png()), headers=H(RECO))
    logs = sorted(p.name for p in tmp_path.glob("audit.jsonl*"))
    assert logs[0] == "audit.jsonl" and "audit.jsonl.1" in logs
    assert all("probes" not in json.loads(x) for p in tmp_path.glob("audit.jsonl*") for x in p.read_text().splitlines())


def test_metrics_text(tmp_path):
    _, c = make(tmp_path)
    c.post("/v1/subjects/ann/faces", files=files(png()), headers=H(ADMIN))
    c.post("/v1/identify", files=files(png()), headers=H(RECO))
    c.post("/v1/identify", files=files(png((3, 3, 90))), headers=H(RECO))
    c.get("/v1/subjects")  # 401
    text = c.get("/metrics", headers=H(RECO)).text
    assert 'pifr_http_requests_total{method="POST",route="/v1/identify",status="200"} 2.0' in text
    assert 'pifr_http_requests_total{method="GET",route="/v1/subjects",status="401"} 1.0' in text
    assert 'pifr_decisions_total{decision="accept",endpoint="identify"} 1.0' in text
    assert 'pifr_decisions_total{decision="reject",endpoint="identify"} 1.0' in text
    assert "pifr_gallery_subjects 1.0" in text and 'pifr_http_request_duration_seconds_bucket{le="0.5",route="/v1/identify"}' in text


def test_full_queue_answers_503_with_retry_after(tmp_path):
    gate = threading.Event()
    fake = FakeRecogniser(block=gate)
    _, c = make(tmp_path, recogniser=fake, workers=1, queue=1)
    out = []
    threads = [threading.Thread(target=lambda: out.append(c.post("/v1/identify", files=files(png()), headers=H(RECO))))
               for _ in range(2)]
    for t in threads:
        t.start()
    assert fake.started.acquire(timeout=20)  # one running, one waiting
    try:
        for _ in range(200):  # the second request is admitted once its body is read
            if c.app.state.pool.admitted == 2:
                break
            threading.Event().wait(0.02)
        r = c.post("/v1/identify", files=files(png()), headers=H(RECO))
        check_error(r, 503, "Busy")
        assert r.headers["retry-after"] == "1"
    finally:
        gate.set()
        for t in threads:
            t.join(30)
    assert [r.status_code for r in out] == [200, 200]
    assert "pifr_busy_rejections_total 1.0" in c.get("/metrics", headers=H(RECO)).text


def test_openapi_and_page(tmp_path):
    _, c = make(tmp_path)
    paths = c.get("/openapi.json").json()["paths"]
    assert {"/v1/identify", "/v1/verify", "/v1/subjects", "/v1/subjects/{name}", "/v1/subjects/{name}/faces"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/identify"]["post"]["requestBody"]["content"]
    assert c.get("/docs").status_code == 200
    page = c.get("/")
    assert page.status_code == 200 and "v1/identify" in page.text and 'id="decision"' in page.text


def test_real_models_on_the_shipped_photos(tmp_path):
    """Enrol Mitchell's frontal photo; his photo turned ~50° is accepted as him, another person's rejected."""
    _, c = make(tmp_path, recogniser=None)
    r = c.post("/v1/subjects/mitchell/faces", headers=H(ADMIN),
               files=files((EXAMPLES / "mitchell_frontal.png").read_bytes(), b"junk"))
    assert r.status_code == 201 and r.json()["added"] == 1 and r.json()["rejected"][0]["index"] == 1
    c.post("/v1/subjects/night/faces", headers=H(ADMIN), files=files((EXAMPLES / "night_frontal.png").read_bytes()))
    r = c.post("/v1/identify", headers=H(RECO), files=files((EXAMPLES / "mitchell_turned.png").read_bytes())).json()
    assert (r["decision"], r["subject"]) == ("accept", "mitchell"), r
    assert len(r["faces"]) == 1 and abs(r["faces"][0]["yaw"]) > 30
    r = c.post("/v1/identify", headers=H(RECO), files=files((EXAMPLES / "phoebe_frontal.png").read_bytes())).json()
    assert r["decision"] == "reject" and r["subject"] is None
    # One door event of two photos of Mitchell: both faces listed and pooled into one decision, at the
    # threshold plus the shift measured for pooled probes.
    one = c.post("/v1/identify", headers=H(RECO), files=files((EXAMPLES / "mitchell_turned.png").read_bytes())).json()
    r = c.post("/v1/identify", headers=H(RECO), files=files((EXAMPLES / "mitchell_sunglasses.png").read_bytes(),
                                                            (EXAMPLES / "mitchell_turned.png").read_bytes())).json()
    assert sorted(f["image"] for f in r["faces"]) == [0, 1] and all(f["used"] for f in r["faces"])
    assert r["policy"] == POLICY_POOLED and (r["decision"], r["subject"]) == ("accept", "mitchell"), r
    assert r["threshold"] > one["threshold"] and r["score"] != one["score"]
    r = c.post("/v1/verify", headers=H(RECO), files=[("a", ("a.png", (EXAMPLES / "night_frontal.png").read_bytes())),
                                                     ("b", ("b.png", (EXAMPLES / "night_turned.png").read_bytes()))])
    assert r.json()["same"] is True and set(r.json()) >= {"score", "threshold", "yaw", "faces"}


def test_workers_times_threads_never_exceed_the_cores(monkeypatch):
    from pifr.service import config as C

    for cores in (1, 2, 16):
        monkeypatch.setattr(C, "default_workers", lambda cores=cores: cores)
        for workers in (0, 1, 2, 3, cores):
            cfg = ServiceConfig(gallery="g", api_keys=KEYS, workers=workers)
            assert cfg.n_workers >= 1 and cfg.n_threads >= 1
            assert cfg.n_workers * cfg.n_threads <= max(cores, cfg.n_workers)
        assert ServiceConfig(gallery="g", api_keys=KEYS).n_threads == 1  # default: a worker per core
    assert C.is_loopback("127.0.0.1") and C.is_loopback("::1") and C.is_loopback("localhost")
    assert not C.is_loopback("0.0.0.0") and not C.is_loopback("10.0.0.1") and not C.is_loopback("example.org")


def test_a_gallery_with_a_fixed_threshold_keeps_it_and_says_so(tmp_path):
    from pifr.gallery import Gallery

    Gallery(threshold=0.2).save(tmp_path / "g.gallery")
    _, c = make(tmp_path)
    c.post("/v1/subjects/ann/faces", files=files(png()), headers=H(ADMIN))
    r = c.post("/v1/identify", files=files(png()), headers=H(RECO)).json()
    assert (r["threshold"], r["threshold_source"], r["far"], r["decision"]) == (0.2, "fixed", None, "accept")
    # Changed by another process while the server runs: picked up at the next request.
    with Gallery.edit(tmp_path / "g.gallery") as g:
        g.threshold = None
    r = c.post("/v1/identify", files=files(png()), headers=H(RECO)).json()
    assert (r["threshold_source"], r["far"]) == ("default", 0.01) and r["threshold"] != 0.2


def test_choose_faces_takes_each_images_best_scored_largest_face():
    from pifr.service.recognizer import choose_faces
    from pifr.types import Face

    def face(x2, score):
        return Face(bbox=np.array([0, 0, x2, x2], np.float32), score=score, landmarks=np.zeros((5, 2), np.float32))

    small_sure, big_sure, big_doubtful = face(20, 0.99), face(60, 0.98), face(70, 0.3)
    assert choose_faces([]) == [] and choose_faces([[], []]) == []
    (i0, f0), (i1, f1) = choose_faces([[small_sure], [big_doubtful, big_sure], []])
    assert (i0, i1) == (0, 1) and f0 is small_sure and f1 is big_sure
