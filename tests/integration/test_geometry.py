"""pifr.geometry with the user-supplied 3D reference head on real faces."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.embedders import get_embedder


@pytest.fixture(scope="module")
def frontal(lfw):
    return pifr.load_image(lfw / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg")


@pytest.fixture(scope="module")
def frontal_and_renders(model3d, frontal):
    """The LFW frontal aligned to TP-GAN's frame, and its renders at 45°, 60° and 75° aligned the same way."""
    from pifr.alignment import TPGAN_128, align_with_landmarks
    from pifr.geometry import render_at_yaw

    face = pifr.detect(frontal)[0]
    front, _ = align_with_landmarks(frontal, face.landmarks, TPGAN_128)
    renders = {}
    for yaw in (45, 60, 75):
        r = render_at_yaw(frontal, yaw, model_path=model3d)
        renders[yaw] = align_with_landmarks(r.image, r.landmarks, TPGAN_128)
    return front, renders


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


@pytest.mark.parametrize("yaw", [-75, 75])
def test_turned_head_shows_no_far_side_through_the_stretched_cheek(model3d, yaw):
    """A texture red on one half of the reference view and green on the other, turned by ±75°:
    the far half may show only as contiguous regions (nose ridge, silhouette), not as a lattice of
    specks seen through gaps in the stretched near cheek — what the z-buffer alone gives."""
    import cv2

    from pifr.geometry import load_reference, turned_view

    ref = load_reference(model3d)
    tex = np.zeros((320, 320, 3), np.float32)
    tex[:, :160, 0] = 255
    tex[:, 160:, 1] = 255

    def specks(**kw) -> int:
        cmap, region, _ = turned_view(ref, yaw, **kw)
        out = cv2.remap(tex, cmap[..., 0], cmap[..., 1], cv2.INTER_NEAREST)
        red, green = (out[..., 0] > 128) & region, (out[..., 1] > 128) & region
        far = red if red.sum() < green.sum() else green
        n, _, stats, _ = cv2.connectedComponentsWithStats(far.astype(np.uint8), connectivity=8)
        return int(sum(stats[i, cv2.CC_STAT_AREA] for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] < 30))

    plain = specks(max_radius=0)
    assert plain > 100  # the plain z-buffer: hundreds of far-side pixels in specks
    assert specks() < 0.2 * plain


def test_depth_scale_changes_the_turned_head_but_not_the_frontal_view(model3d):
    from pifr.geometry import load_reference, turned_view

    ref = load_reference(model3d)
    flat0, deep0 = (turned_view(ref, 0, depth_scale=k)[2] for k in (0.8, 1.2))
    assert np.abs(flat0 - deep0).max() < 3  # depth runs along the camera axis: the frontal view keeps its 5 points
    (_, flat_region, flat), (_, deep_region, deep) = (turned_view(ref, 60, depth_scale=k) for k in (0.8, 1.2))
    # Turned by +60° (towards the image's right), a deeper head's nose tip sticks out further to the
    # right of its eyes than a flatter head's, and the silhouettes differ.
    ahead = lambda lm: lm[2, 0] - lm[:2, 0].mean()  # noqa: E731
    assert ahead(deep) - ahead(flat) > 5
    assert (flat_region ^ deep_region).sum() > 500


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
    back = pifr.frontalize(r.image, method="hassner", weights=model3d)
    assert back.image.shape == (128, 128, 3) and back.yaw > 15
    from pifr.views import to_template

    v = emb.embed_crops(to_template(back.image, emb.template)[None])[0]
    assert float(v @ same_person) > emb.threshold > float(v @ other)


def test_frontalize_3d_on_a_real_profile(model3d, cfp):
    f = pifr.frontalize(cfp / "Data" / "Images" / "351" / "profile" / "01.jpg", method="hassner", weights=model3d)
    assert f.image.shape == (128, 128, 3) and f.generator == "hassner2015-3d"
    assert abs(f.yaw) > 30
    with pytest.raises(pifr.UnknownModelError):
        pifr.frontalize(cfp / "Data" / "Images" / "351" / "profile" / "01.jpg", method="magic")


def test_frontal_flow_maps_a_render_back_onto_its_frontal(model3d, frontal_and_renders):
    """Warping the real frontal through the flow of its own render reproduces the render on the
    face (better than no warp and than the flow of the opposite yaw); at 0° the flow is the identity."""
    import cv2

    from pifr.alignment import TPGAN_128
    from pifr.geometry import frontal_flow

    flow, valid = frontal_flow(TPGAN_128.array, 0.0, model_path=model3d)
    gy, gx = np.mgrid[0:128, 0:128]
    assert 0.4 < valid.mean() < 0.9
    assert np.abs(flow[..., 0] - gx)[valid].mean() < 1.5 and np.abs(flow[..., 1] - gy)[valid].mean() < 1.5
    front, renders = frontal_and_renders

    def err(f, v, crop):
        w = cv2.remap(front.astype(np.float32), f[..., 0], f[..., 1], cv2.INTER_LINEAR)
        d = np.abs(cv2.GaussianBlur(w, (0, 0), 2) - cv2.GaussianBlur(crop.astype(np.float32), (0, 0), 2)).mean(-1)
        return d[v].mean()

    for yaw, (crop, lm) in renders.items():
        f, v = frontal_flow(lm, yaw, model_path=model3d)
        fm, vm = frontal_flow(lm, -yaw, model_path=model3d)
        ident = np.stack([gx, gy], -1).astype(np.float32)
        e, e0, em = err(f, v, crop), err(ident, v, crop), err(fm, v & vm, crop)
        print(f"render at {yaw}°: warped frontal vs render {e:.1f}, unwarped {e0:.1f}, opposite-yaw warp {em:.1f} (0-255)")
        assert e < 0.75 * e0 and e < 0.75 * em and v.mean() > 0.3


def test_frontalize_hassner_list_keeps_going_past_a_bad_image(model3d, cfp):
    good = cfp / "Data" / "Images" / "351" / "profile" / "01.jpg"
    out = pifr.frontalize([good, b"not an image", good], method="hassner", weights=model3d)
    assert [type(o).__name__ for o in out] == ["Frontalized", "InvalidImageError", "Frontalized"]
    assert np.array_equal(out[0].image, out[2].image)
