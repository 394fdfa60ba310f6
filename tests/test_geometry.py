"""3D geometry on real faces: renders at known yaws, classical frontalization, round trips."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.embedders import get_embedder


@pytest.fixture(scope="module")
def model3d(shared):
    p = shared / "models" / "face-frontalization" / "model3Ddlib.mat"
    if not p.is_file():
        pytest.skip("model3Ddlib.mat (academic licence) not available")
    return str(p)


@pytest.fixture(scope="module")
def frontal(lfw):
    return pifr.load_image(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg")


def test_reference_model_loads_and_is_checked(model3d, tmp_path):
    from pifr.geometry import load_reference

    ref = load_reference(model3d)
    assert ref.points.shape == (320, 320, 3) and 0.1 < ref.face_mask.mean() < 0.5
    lm5 = ref.landmarks5
    assert lm5[0, 0] < lm5[2, 0] < lm5[1, 0] and lm5[0, 1] < lm5[2, 1] < lm5[3, 1]
    bad = tmp_path / "model3Ddlib.mat"
    bad.write_bytes(b"junk")
    with pytest.raises(pifr.WeightsChecksumError):
        load_reference(str(bad))


@pytest.mark.parametrize("yaw", [-60, -30, 30, 60])
def test_render_yaw_is_what_was_asked(model3d, frontal, yaw):
    from pifr.geometry import render_at_yaw

    r = render_at_yaw(frontal, yaw, model_path=model3d)
    assert r.image.shape == (320, 320, 3) and r.yaw == yaw
    faces = pifr.detect(r.image)
    assert faces, "no face detected in the render"
    est = faces[0].yaw
    print(f"render at {yaw:+d}°: 3DDFA estimates {est:+.1f}°")
    assert np.sign(est) == np.sign(yaw) and abs(est - yaw) < 20
    # The render's 5 landmarks agree with the detector's on the rendered image.
    assert np.abs(faces[0].landmarks[2] - r.landmarks[2]).max() < 0.15 * faces[0].width  # the detector is least sure of the nose at high yaw


def test_fill_background_spreads_the_face_edge_and_keeps_the_face(model3d, frontal):
    from pifr.geometry import fill_background, render_at_yaw

    r = render_at_yaw(frontal, 45, model_path=model3d)
    out = fill_background(r.image, r.mask)
    assert np.array_equal(out[r.mask], r.image[r.mask])
    assert (out[~r.mask].max(1) < 10).mean() < 0.01, "the black surround must be gone"
    # Just outside the face the colour is the face edge's; far out it is smooth.
    ys, xs = np.nonzero(r.mask)
    ring = np.zeros_like(r.mask)
    ring[max(ys.min() - 4, 0):ys.max() + 5, max(xs.min() - 4, 0):xs.max() + 5] = True
    ring &= ~r.mask
    edge = r.image[r.mask & (np.abs(np.diff(r.mask.astype(int), axis=1, prepend=0)) > 0)].astype(float).mean(0)
    assert np.abs(out[ring].astype(float).mean(0) - edge).max() < 40
    with pytest.raises(ValueError):
        fill_background(r.image, np.zeros_like(r.mask))


def test_round_trip_keeps_identity(model3d, frontal, lfw):
    from pifr.geometry import render_at_yaw

    emb = get_embedder("mobilefacenet")
    same_person = pifr.embed(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg", embedder="mobilefacenet")
    other = pifr.embed(lfw / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg", embedder="mobilefacenet")
    r = render_at_yaw(frontal, 30, model_path=model3d)
    back = pifr.frontalize(r.image, method="3d", weights=model3d)
    assert back.image.shape == (128, 128, 3) and back.yaw > 15
    from pifr.frontalization import to_template

    v = emb.embed_crops(to_template(back.image, emb.template)[None])[0]
    assert float(v @ same_person) > emb.threshold > float(v @ other)


def test_frontalize_3d_on_a_real_profile(model3d, cfp):
    f = pifr.frontalize(cfp / "Data" / "Images" / "351" / "profile" / "01.jpg", method="3d", weights=model3d)
    assert f.image.shape == (128, 128, 3) and f.generator == "hassner2015-3d"
    assert abs(f.yaw) > 30
    with pytest.raises(pifr.UnknownModelError):
        pifr.frontalize(cfp / "Data" / "Images" / "351" / "profile" / "01.jpg", method="magic")
