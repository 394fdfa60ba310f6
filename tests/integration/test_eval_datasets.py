"""pifr.eval.datasets on the real LFW, CFP and CMU folders."""
from __future__ import annotations

from collections import Counter

import pifr
from pifr.eval.datasets import cmu_faces


def test_cmu_faces_full_scale_only_and_extracted_once(shared, tmp_path):
    archive = shared / "data" / "cmu_faces" / "cmu_faces_full_and_half.tar.gz"
    images = cmu_faces(archive, tmp_path / "cmu")
    assert len({im.person for im in images}) == 20
    assert Counter(im.pose for im in images).keys() == {"straight", "left", "right", "up"}
    assert all(not im.path.stem.endswith(("_2", "_4")) for im in images)
    assert pifr.load_image(images[0].path).shape[:2] == (120, 128)  # full scale, grayscale → RGB
    first = images[0].path.stat().st_mtime_ns
    again = cmu_faces(archive, tmp_path / "cmu")  # already there: not extracted again
    assert [im.path for im in again] == [im.path for im in images] and images[0].path.stat().st_mtime_ns == first


def test_cfp_names_and_lfw_people_leave_out_validation_people(cfp, lfw):
    from pifr.eval.datasets import cfp_names, lfw_people

    names = cfp_names(cfp)
    assert len(names) == 500 and names[1] == "50_Cent" and names[351] == "Mitt_Romney"
    validation = {n for i, n in names.items() if i > 350}
    everyone = {p[0].parent.name for p in lfw_people(lfw)}
    shared_people = validation & everyone
    assert len(shared_people) >= 19  # CFP's validation people include famous LFW people
    kept = lfw_people(lfw, exclude=validation)
    kept_names = {p[0].parent.name for p in kept}
    assert not kept_names & validation and len(kept_names) == len(everyone) - len(shared_people)
    assert all(p[0].name.startswith(p[0].parent.name + "_") and p == sorted(p) for p in kept[:50])
