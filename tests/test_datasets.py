"""Dataset readers on the real files in ../shared."""
from __future__ import annotations

from collections import Counter

import pifr
from pifr.datasets import cmu_faces


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
