"""Gallery on real LFW people: enrollment, identification, persistence, threads, CLI."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pifr
from pifr.gallery import Gallery

from tests.conftest import EXAMPLES


PEOPLE = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon"]


def img(lfw, name, i):
    return lfw / name / f"{name}_{i:04d}.jpg"


@pytest.fixture(scope="module")
def gallery(lfw) -> Gallery:
    g = Gallery()
    for name in PEOPLE:
        rep = g.enroll(name, [img(lfw, name, 1), img(lfw, name, 2)])
        assert rep.added == 2 and rep.ok
    return g


def test_identify_enrolled_and_reject_unknown(gallery, lfw):
    for name in PEOPLE:
        top = gallery.identify(img(lfw, name, 5), k=3)
        assert len(top) == 3 and top[0].identity == name and top[0].accepted
        assert top[0].score >= top[1].score >= top[2].score
    unknown = gallery.identify(img(lfw, "George_W_Bush", 1))[0]
    assert not unknown.accepted
    assert gallery.verify("Tony_Blair", img(lfw, "Tony_Blair", 7)).accepted
    assert not gallery.verify("Tony_Blair", img(lfw, "Colin_Powell", 7)).accepted


def test_enroll_reports_failures_and_duplicates(lfw, tmp_path):
    g = Gallery()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00" * 10)
    rep = g.enroll("x", [img(lfw, "Tony_Blair", 1), bad, np.zeros((80, 80, 3), np.uint8), img(lfw, "Tony_Blair", 1)])
    assert rep.added == 1 and [i for i, _ in rep.failures] == [1, 2] and rep.duplicates == (3,)
    assert "InvalidImageError" in rep.failures[0][1] and "NoFaceError" in rep.failures[1][1]
    assert g.enroll("y", [img(lfw, "Tony_Blair", 1)]).duplicates == (0,)  # same image under another name
    assert g.remove("x") == 1
    with pytest.raises(pifr.GalleryError):
        g.remove("x")
    with pytest.raises(pifr.GalleryError):
        g.identify(img(lfw, "Tony_Blair", 2))  # empty


def test_save_load_round_trip_and_bad_files(gallery, lfw, tmp_path):
    p = tmp_path / "g.gallery"
    gallery.save(p)
    g2 = Gallery.load(p)
    assert g2.identities == gallery.identities and g2.threshold == gallery.threshold
    probe = img(lfw, "Ariel_Sharon", 4)
    assert g2.identify(probe, k=2) == gallery.identify(probe, k=2)
    corrupt = tmp_path / "corrupt.gallery"
    corrupt.write_bytes(p.read_bytes()[:500])
    with pytest.raises(pifr.GalleryError):
        Gallery.load(corrupt)
    with pytest.raises(pifr.GalleryError):
        Gallery.load(tmp_path / "missing.gallery")

    def rewrite(**changes):
        z = np.load(p, allow_pickle=False)
        h = json.loads(str(z["header"]))
        h.update(changes)
        q = tmp_path / "edited.gallery"
        np.savez(open(q, "wb"), header=np.array(json.dumps(h)), **{k: z[k] for k in z.files if k != "header"})
        return q

    with pytest.raises(pifr.GalleryError, match="schema"):
        Gallery.load(rewrite(schema=99))
    with pytest.raises(pifr.GalleryError, match="re-enroll"):
        Gallery.load(rewrite(embedder_sha256="0" * 64))


def test_eight_threads_identify_identically(gallery, lfw):
    probes = [img(lfw, n, 3) for n in PEOPLE] + [img(lfw, "George_W_Bush", 2)]
    expected = [gallery.identify(p, k=2) for p in probes]
    with ThreadPoolExecutor(8) as ex:
        for _ in range(2):
            got = list(ex.map(lambda p: gallery.identify(p, k=2), probes * 4))
            assert got == expected * 4


def test_cli_enroll_identify_list_remove(lfw, tmp_path, capsys):
    from pifr.cli import main

    g = str(tmp_path / "cli.gallery")
    assert main(["enroll", "--gallery", g, "--id", "Tony_Blair", str(img(lfw, "Tony_Blair", 1)), str(img(lfw, "Tony_Blair", 2))]) == 0
    assert main(["enroll", "--gallery", g, "--id", "Colin_Powell", str(img(lfw, "Colin_Powell", 1))]) == 0
    capsys.readouterr()
    assert main(["identify", "--gallery", g, str(img(lfw, "Tony_Blair", 9)), str(EXAMPLES / "night_frontal.png")]) == 0
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert lines[0]["matches"][0]["identity"] == "Tony_Blair" and lines[0]["matches"][0]["accepted"]
    assert not lines[1]["matches"][0]["accepted"]
    assert main(["gallery", "list", "--gallery", g]) == 0
    assert "Colin_Powell" in capsys.readouterr().out
    assert main(["gallery", "remove", "--gallery", g, "Colin_Powell"]) == 0
    assert Gallery.load(g).identities == ["Tony_Blair"]
