"""Detection on real CFP and LFW faces."""
from __future__ import annotations

import pytest

import pifr
from pifr.eval.datasets import cfp_images


@pytest.mark.parametrize("detector", ["retinaface", "mtcnn"])
def test_cfp_profiles_and_frontals_detected(cfp, detector):
    ims = [im for im in cfp_images(cfp, range(351, 361)) if im.pose == "profile" or im.index <= 2]
    found = 0
    for im in ims:
        faces = pifr.detect(im.path, detector=detector, yaw=False)
        if faces:
            found += 1
            f = faces[0]
            x1, y1, x2, y2 = f.bbox
            assert x2 > x1 and y2 > y1 and 0 <= f.score <= 1 and f.detector == detector
            inside = (f.landmarks[:, 0] > x1 - 0.2 * f.width) & (f.landmarks[:, 0] < x2 + 0.2 * f.width)
            assert inside.all()
    assert found / len(ims) >= 0.9, f"{detector}: found {found}/{len(ims)}"


def test_frontal_landmark_order(lfw):
    f = pifr.detect(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg", yaw=False)[0]
    le, re, nose, ml, mr = f.landmarks
    assert le[0] < nose[0] < re[0] and ml[0] < mr[0]
    assert max(le[1], re[1]) < nose[1] < min(ml[1], mr[1])


def test_face_is_frozen_and_serialisable(lfw):
    import json

    f = pifr.detect(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg")[0]
    with pytest.raises(Exception):
        f.score = 0.0
    with pytest.raises(ValueError):
        f.landmarks[0, 0] = 1.0  # read-only array
    json.dumps(f.to_dict())
