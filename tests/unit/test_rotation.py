"""pifr.rotation: renders at any pose, mirror fill, rotate-and-render, pifr.rotate — on the shipped example photos."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.errors import ShapeError

from tests.conftest import EXAMPLES


@pytest.fixture(scope="module")
def turned():
    img = pifr.load_image(EXAMPLES / "mitchell_turned.png")
    return img, pifr.detect(img)[0]


def _yaw_of(render):
    return pifr.estimate_yaw(np.ascontiguousarray(np.pad(render.image, ((40, 40), (40, 40), (0, 0)))))


@pytest.mark.parametrize("target", [0.0, -45.0, 60.0])
def test_rotate_renders_the_requested_yaw(turned, target):
    img, face = turned
    r = pifr.rotate(img, yaw=target, face=face, method="3d")
    assert r.image.shape == (128, 128, 3) and r.image.dtype == np.uint8 and r.mask.shape == (128, 128)
    assert r.landmarks.shape == (68, 2) and r.landmarks5.shape == (5, 2)
    assert abs(r.yaw_in - 52) < 8 and r.yaw_out == target
    assert abs(_yaw_of(r) - target) < 12


def test_frontal_render_of_a_turned_face_is_still_the_person(turned):
    """The frontal render of the 52°-turned photo matches the same man's frontal photo better than
    the other people in the examples (dlib's embedder on the renders, template-placed)."""
    img, face = turned
    emb = pifr.get_embedder("dlib_resnet")
    r = pifr.rotate(img, 0.0, face=face, template=emb.template, method="3d")
    v = emb.embed_crops(r.image[None])[0]
    same = pifr.embed(EXAMPLES / "mitchell_frontal.png", embedder=emb.name)
    others = [pifr.embed(EXAMPLES / f, embedder=emb.name) for f in ("night_frontal.png", "phoebe_frontal.png")]
    assert float(v @ same) > max(float(v @ o) for o in others)


def test_hidden_side_is_filled_from_the_mirror_and_marked(turned):
    img, face = turned
    filled = pifr.rotate(img, 0.0, face=face, method="3d")
    bare = pifr.rotate(img, 0.0, face=face, mirror_fill=False, method="3d")
    low = filled.mask & (filled.visibility < 0.2)
    assert low.sum() > 200  # a 52° profile hides a good part of the far cheek
    assert (filled.visibility[filled.mask] > 0.9).mean() > 0.4
    # Filling changes only what the photo did not see well.
    seen = filled.mask & (filled.visibility > 0.99)
    assert np.abs(filled.image[seen].astype(int) - bare.image[seen]).max() <= 1
    assert np.abs(filled.image[low].astype(int) - bare.image[low]).mean() > 5


def test_rotate_list_reports_each_bad_item_and_keeps_the_good(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    blank = np.zeros((64, 64, 3), np.uint8)
    out = pifr.rotate([EXAMPLES / "night_turned.png", bad, blank], yaw=0.0)
    assert isinstance(out[0], pifr.rotation.Rotated)
    assert isinstance(out[1], pifr.InvalidImageError)
    assert isinstance(out[2], pifr.NoFaceError)


def test_render_then_refine_keeps_order_and_per_item_errors():
    from pifr.errors import NoFaceError
    from pifr.rotation import render_then_refine

    def render(i, item):
        if item is None:
            raise NoFaceError(f"item {i}: no face")
        return item * 10

    calls = []

    def refine(renders):
        calls.append(list(renders))
        return [r + 1 for r in renders]

    out = render_then_refine([1, None, 2, None, 3], render, refine)
    assert calls == [[10, 20, 30]]  # one refine call over the good renders, in order
    assert out[0] == 11 and out[2] == 21 and out[4] == 31
    assert isinstance(out[1], NoFaceError) and "item 1" in str(out[1]) and isinstance(out[3], NoFaceError)
    assert render_then_refine([], render, refine) == [] and calls[-1] == []
    with pytest.raises(ValueError):  # not a PifrError: not one bad item, so it propagates
        render_then_refine([1], lambda i, x: int("x"), refine)
    with pytest.raises(ShapeError):  # a refine that loses results must not leave holes
        render_then_refine([1, 2], render, lambda rs: rs[:1])


def test_render_poses_equals_one_render_per_yaw_and_checks_every_pose(turned):
    """render_poses shares what the photo sees across its yaws: each render is the pixel-same as
    render_pose's at that yaw; a bad yaw anywhere in the list is refused before any rendering."""
    from pifr.face3d import fit_faces
    from pifr.rotation import render_pose, render_poses

    img, face = turned
    fit = fit_faces(img, [face])[0]
    from pifr.alignment import get_template
    from pifr.rotation import render_fit, template_camera, view_rotation

    many = render_poses(fit, img, [15.0, -45.0, 0.0], template="dlib_150")
    assert [r.yaw_out for r in many] == [15.0, -45.0, 0.0]
    t = get_template("dlib_150")
    for r in many:
        # Against the one-camera path, which works out what the photo sees afresh.
        image, mask, vis = render_fit(fit, img, template_camera(fit.landmarks3d, view_rotation(r.yaw_out), t), t.size)
        assert np.array_equal(r.image, image) and np.array_equal(r.mask, mask) and np.array_equal(r.visibility, vis)
    assert np.array_equal(render_pose(fit, img, -45.0, template="dlib_150").image, many[1].image)
    assert render_poses(fit, img, []) == []
    with pytest.raises(ShapeError):
        render_poses(fit, img, [15.0, 120.0])


@pytest.mark.parametrize("yaw", [float("nan"), 120.0, "left"])
def test_rotate_rejects_bad_target_poses(yaw):
    with pytest.raises(ShapeError):
        pifr.rotate(EXAMPLES / "night_turned.png", yaw=yaw)


def test_rotate_and_render_pair_is_aligned_with_its_target(turned):
    from pifr.alignment import TPGAN_128, align
    from pifr.face3d import fit_faces
    from pifr.rotation import rotate_and_render

    img, face = turned
    fit = fit_faces(img, [face])[0]
    pair = rotate_and_render(fit, img, face, yaw_away=-30.0)
    assert np.array_equal(pair.target, align(img, face, TPGAN_128))
    assert pair.mask.mean() > 0.25 and pair.yaw_away == -30.0
    m = pair.mask
    diff = np.abs(pair.input[m].astype(int) - pair.target[m]).mean()
    shifted = np.abs(np.roll(pair.input, 6, axis=1)[m].astype(int) - pair.target[m]).mean()
    assert diff < 0.7 * shifted, (diff, shifted)  # pixel-aligned: a 6-px shift is clearly worse


def test_render_fit_with_a_texture_keeps_its_channels_even_when_nothing_is_covered(turned):
    """Rotate-and-render re-textures from a 4-channel view: the output has the texture's channels,
    also for a camera that sees no face (it used to come back with the photo's 3)."""
    from pifr.face3d import fit_faces
    from pifr.rotation import render_fit

    img, face = turned
    fit = fit_faces(img, [face])[0]
    tex = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    seen, mask, _ = render_fit(fit, img, fit.camera, 64, texture=(tex, fit.camera))
    assert seen.shape == (64, 64, 4)
    away = fit.camera.copy()
    away[:2, 3] += 10_000  # the face lands far outside the 64-px frame
    empty, mask, vis = render_fit(fit, img, away, 64, texture=(tex, fit.camera))
    assert empty.shape == (64, 64, 4) and not mask.any() and not empty.any() and not vis.any()
