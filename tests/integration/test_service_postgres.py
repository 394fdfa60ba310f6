"""The service's PostgreSQL store against a real PostgreSQL started here in a temporary folder
(initdb + pg_ctl, as the ``postgres`` user when run as root): writes from two stores at once,
another server finding an enrolment within a second, and the same decisions as the file store."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_concurrently

from .service_util import ADMIN, RECO, Server, free_port, lfw_people

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[test]')")
httpx = pytest.importorskip("httpx")


def _pg_bin() -> Path:
    found = shutil.which("initdb")
    cands = [found] if found else sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not cands:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    return Path(os.path.realpath(cands[-1])).parent


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL on a free loopback port (trust auth, fsync off), stopped afterwards."""
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="pifr-pg-"))
    prefix = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    try:
        subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                                 "--no-sync"], check=True, capture_output=True, timeout=180)
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                                 "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=120)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {e.stderr.decode(errors='replace')[-2000:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def db(postgres_url, request):
    """A fresh database per test; its URL."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    with psycopg.connect(postgres_url, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name}")
        c.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + "/" + name


def _templates(dim, seed, image=0):
    from pifr.service.store import Template

    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return [Template(image, v / np.linalg.norm(v), f"h{seed}", "raw")]


def test_two_postgres_stores_write_at_once_and_see_each_other(db):
    from pifr.service.postgres import PostgresStore

    a, b = PostgresStore(db, 0.01, poll_s=0.5), PostgresStore(db, 0.01, poll_s=0.5)
    dim = a.snapshot().dim
    assert a.snapshot().templates == 0 and "t_" in a.description and "@" not in a.description
    assert a.add_templates("ann", _templates(dim, 1)).added == 1
    t0 = time.monotonic()
    while "ann" not in b.snapshot().template_counts():
        assert time.monotonic() - t0 < 1.0, "the other store did not see the write within a second"
        time.sleep(0.05)
    r = b.add_templates("bob", _templates(dim, 1) + _templates(dim, 2, image=1))  # the first: ann's photo
    assert (r.added, r.duplicates) == (1, (0,))
    write_concurrently((a, b), 4, 10, lambda k, i: _templates(dim, 100 + 10 * k + i))
    time.sleep(0.6)
    assert len(a.snapshot()) == len(b.snapshot()) == 42
    assert a.snapshot().far_per_probe == 0.01
    g = a.snapshot()
    assert np.allclose(np.linalg.norm(g._emb, axis=1), 1.0, atol=1e-5)
    assert b.remove_subject("ann") == 1 and b.remove_subject("ann") == 0
    time.sleep(0.6)
    assert "ann" not in a.snapshot().template_counts()
    a.close()
    b.close()


def _post(url, path, key, photos, field="image"):
    files = [(field, (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    return httpx.post(url + path, headers={"X-API-Key": key}, files=files, timeout=120)


def test_servers_on_postgres_find_each_others_enrolments_and_decide_as_the_file_store(db, lfw, tmp_path):
    people = lfw_people(lfw, 8, photos=2)
    enrolled, strangers = people[:6], people[6:]
    with Server(db, tmp_path, name="pg-a") as a, Server(db, tmp_path, name="pg-b") as b, \
            Server(str(tmp_path / "same.gallery"), tmp_path, name="file") as f:
        for person in enrolled:
            name = person[0].parent.name
            for srv in (a, f):
                r = _post(srv.url, f"/v1/subjects/{name}/faces", ADMIN, person[:1])
                assert r.status_code == 201, r.text
        # Enrolled on a, found on b within a second (b polls the change counter every 0.5 s).
        newcomer, nname = strangers[0], strangers[0][0].parent.name
        assert _post(a.url, f"/v1/subjects/{nname}/faces", ADMIN, newcomer[:1]).status_code == 201
        t0 = time.monotonic()
        while nname not in {s["name"] for s in httpx.get(b.url + "/v1/subjects", headers={"X-API-Key": RECO}).json()["subjects"]}:
            assert time.monotonic() - t0 < 1.0, "server b did not see a's enrolment within a second"
            time.sleep(0.02)
        rec = _post(b.url, "/v1/identify", RECO, newcomer[1:2]).json()
        assert (rec["decision"], rec["subject"]) == ("accept", nname), rec
        assert httpx.delete(f"{a.url}/v1/subjects/{nname}", headers={"X-API-Key": ADMIN}).status_code == 200
        time.sleep(0.6)
        # Same data, same decisions: the PostgreSQL servers and the file server agree on every probe.
        for person in people:
            recs = [_post(srv.url, "/v1/identify", RECO, person[1:2]) for srv in (a, b, f)]
            assert all(r.status_code == recs[0].status_code for r in recs), [r.text for r in recs]
            if recs[0].status_code != 200:
                continue
            got = [(r.json()["decision"], r.json()["subject"], r.json()["threshold"], r.json()["gallery"]) for r in recs]
            assert got[0] == got[1] == got[2], got
            scores = [r.json()["score"] for r in recs]
            assert max(scores) - min(scores) < 1e-4
