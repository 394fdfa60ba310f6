"""``pifr serve`` as real processes on real LFW faces: the decision over HTTP, two servers
enrolling into one gallery file at once, and a server killed with SIGKILL mid-enrolment."""
from __future__ import annotations

import threading
import time

import pytest

from pifr.gallery import Gallery

from .service_util import ADMIN, RECO, Server, lfw_people

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")


def enrol(client, url, name, photo):
    with open(photo, "rb") as f:
        return client.post(f"{url}/v1/subjects/{name}/faces", headers={"X-API-Key": ADMIN},
                           files=[("image", (photo.name, f.read(), "image/jpeg"))], timeout=120)


def subjects(url):
    r = httpx.get(f"{url}/v1/subjects", headers={"X-API-Key": RECO}, timeout=30)
    assert r.status_code == 200, r.text
    return {s["name"] for s in r.json()["subjects"]}


def test_two_servers_on_one_file_enrolling_at_once_lose_nothing(lfw, tmp_path):
    people = lfw_people(lfw, 24, photos=2)
    gallery = str(tmp_path / "staff.gallery")
    with Server(gallery, tmp_path, "--workers", "1", "--threads", "1", name="a") as a, \
            Server(gallery, tmp_path, "--workers", "1", "--threads", "1", name="b") as b:
        ok, errors = [], []

        def client(k):
            with httpx.Client() as c:
                for i in range(k, len(people), 8):
                    r = enrol(c, (a.url, b.url)[k % 2], people[i][0].parent.name, people[i][0])
                    (ok if r.status_code == 201 else errors).append((people[i][0].parent.name, r.status_code, r.text))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert not [e for e in errors if e[1] != 422], errors  # 422: no face in that photo (reported, not lost)
        assert len(ok) >= 22
        names = {n for n, _, _ in ok}
        assert subjects(a.url) == subjects(b.url) == names
        assert set(Gallery.load(gallery).identities) == names
        # Enrolled through one server, recognised by the other from another photo of them.
        hits = 0
        for i, person in enumerate(people[:6]):
            name = person[0].parent.name
            srv = (b, a)[i % 2]  # person i was enrolled through (a, b)[i % 2]: ask the other
            with open(person[1], "rb") as f:
                r = httpx.post(f"{srv.url}/v1/identify", headers={"X-API-Key": RECO},
                               files=[("image", ("p.jpg", f.read(), "image/jpeg"))], timeout=120)
            assert r.status_code in (200, 422), r.text
            if r.status_code == 200:
                rec = r.json()
                assert rec["decision"] in ("accept", "reject") and rec["far"] == 0.01
                hits += rec["decision"] == "accept" and rec["subject"] == name
        assert hits >= 3


def test_sigkill_during_enrolment_leaves_a_valid_gallery(lfw, tmp_path):
    people = lfw_people(lfw, 40)
    gallery = str(tmp_path / "staff.gallery")
    acknowledged = []
    srv = Server(gallery, tmp_path, "--workers", "2", name="killed")
    stop = threading.Event()

    def client(k):
        with httpx.Client() as c:
            for i in range(k, len(people), 3):
                if stop.is_set():
                    return
                try:
                    r = enrol(c, srv.url, people[i][0].parent.name, people[i][0])
                except httpx.HTTPError:
                    return  # the server died under this request
                if r.status_code == 201:
                    acknowledged.append(people[i][0].parent.name)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while len(acknowledged) < 6 and time.monotonic() - t0 < 300:
        time.sleep(0.05)
    srv.kill()  # while the three clients' enrolments are in flight
    stop.set()
    for t in threads:
        t.join(120)
    assert len(acknowledged) >= 6
    g = Gallery.load(gallery)  # a complete file, not a torn one
    assert set(acknowledged) <= set(g.identities)
    with Server(gallery, tmp_path, name="restarted") as again:
        assert set(acknowledged) <= subjects(again.url) == set(g.identities)
        r = enrol(httpx, again.url, people[-1][0].parent.name, people[-1][0])
        assert r.status_code == 201, r.text
