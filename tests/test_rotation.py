"""3D fit, rasteriser and rotation (pifr.face3d, pifr.rendering, pifr.rotation) — offline, on the
shipped example photos."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.errors import FitError, ShapeError
from pifr.rendering import rasterize, vertex_normals

from conftest import EXAMPLES


def test_rasterize_covers_a_triangle_with_exact_barycentrics():
    xy = np.array([[1.0, 1.0], [9.0, 1.0], [1.0, 9.0]])
    r = rasterize(xy, np.zeros(3), np.array([[0, 1, 2]]), (12, 12))
    # Pixel centres with x + y ≤ 10 inside [1, 9]: a right triangle of 45 pixels.
    assert r.mask.sum() == 45
    assert r.mask[1, 1] and r.mask[1, 9] and r.mask[9, 1] and not r.mask[9, 9] and not r.mask[0, 0]
    b = r.bary[5, 3]  # x=3, y=5: weights of the three corners reproduce the point
    assert np.allclose(b @ xy, [3.0, 5.0], atol=1e-5) and np.isclose(b.sum(), 1.0)


def test_rasterize_keeps_the_nearer_of_two_overlapping_triangles():
    xy = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]] * 2)
    depth = np.array([1.0, 1.0, 1.0, 5.0, 5.0, 5.0])
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    assert (rasterize(xy, depth, tris, (11, 11)).tri[rasterize(xy, depth, tris, (11, 11)).mask] == 1).all()
    assert (rasterize(xy, depth[::-1].copy(), tris, (11, 11)).tri[rasterize(xy, depth[::-1].copy(), tris, (11, 11)).mask] == 0).all()


def test_vertex_normals_of_a_plane_face_the_camera():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], float)
    n = vertex_normals(v, np.array([[0, 1, 2], [1, 3, 2]]))
    assert np.allclose(n, [0, 0, 1])


def test_thin_plate_is_exact_at_the_landmarks_and_reproduces_affine_maps():
    from pifr.face3d import face_model, thin_plate_weights

    m = face_model()
    w = thin_plate_weights(m.landmarks_mean, np.vstack([m.landmarks_mean, m.vertices[:50]]))
    a = np.array([[1.1, 0.1, 0.0], [0.0, 0.9, 0.2], [0.05, 0.0, 1.0]])
    moved = m.landmarks_mean @ a.T + 1000.0
    out = w @ moved
    assert np.allclose(out[:68], moved, atol=1.0)  # micrometres
    assert np.allclose(out[68:], m.vertices[:50] @ a.T + 1000.0, atol=1.0)


def test_mesh_is_left_right_symmetric():
    from pifr.face3d import face_model

    m = face_model()
    v = m.vertices
    assert np.median(np.abs(v[m.mirror, 0] + v[:, 0])) < 2000  # under 2 mm
    assert (m.mirror[m.mirror] == np.arange(len(v))).all()


@pytest.fixture(scope="module")
def turned():
    img = pifr.load_image(EXAMPLES / "mitchell_turned.png")
    return img, pifr.detect(img)[0]


def test_fit_agrees_with_the_detector_and_the_yaw_estimator(turned):
    from pifr.face3d import fit_faces, landmarks5_from_68

    img, face = turned
    fit = fit_faces(img, [face])[0]
    assert abs(fit.yaw - pifr.estimate_yaw(img, face)) < 1.0
    err = np.linalg.norm(landmarks5_from_68(fit.landmarks68()) - face.landmarks, axis=1).mean()
    assert err < 0.12 * face.width, err


def _yaw_of(render):
    return pifr.estimate_yaw(np.ascontiguousarray(np.pad(render.image, ((40, 40), (40, 40), (0, 0)))))


@pytest.mark.parametrize("target", [0.0, -45.0, 60.0])
def test_rotate_renders_the_requested_yaw(turned, target):
    img, face = turned
    r = pifr.rotate(img, yaw=target, face=face)
    assert r.image.shape == (128, 128, 3) and r.image.dtype == np.uint8 and r.mask.shape == (128, 128)
    assert r.landmarks.shape == (68, 2) and r.landmarks5.shape == (5, 2)
    assert abs(r.yaw_in - 52) < 8 and r.yaw_out == target
    assert abs(_yaw_of(r) - target) < 12


def test_frontal_render_of_a_turned_face_is_still_the_person(turned):
    """The frontal render of the 52°-turned photo matches the same man's frontal photo better than
    the other people in the examples (dlib's embedder on the renders, template-placed)."""
    img, face = turned
    emb = pifr.get_embedder("dlib_resnet")
    r = pifr.rotate(img, 0.0, face=face, template=emb.template)
    v = emb.embed_crops(r.image[None])[0]
    same = pifr.embed(EXAMPLES / "mitchell_frontal.png")
    others = [pifr.embed(EXAMPLES / f) for f in ("night_frontal.png", "phoebe_frontal.png")]
    assert float(v @ same) > max(float(v @ o) for o in others)


def test_hidden_side_is_filled_from_the_mirror_and_marked(turned):
    img, face = turned
    filled = pifr.rotate(img, 0.0, face=face)
    bare = pifr.rotate(img, 0.0, face=face, mirror_fill=False)
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


@pytest.mark.parametrize("yaw", [float("nan"), 120.0, "left"])
def test_rotate_rejects_bad_target_poses(yaw):
    with pytest.raises(ShapeError):
        pifr.rotate(EXAMPLES / "night_turned.png", yaw=yaw)


def test_a_tiny_face_is_refused_with_a_typed_error_naming_it():
    from pifr.face3d import fit_faces

    img = pifr.load_image(EXAMPLES / "night_frontal.png")
    face = pifr.detect(img)[0]
    tiny = pifr.Face(np.array([10, 10, 20, 22], np.float32), 0.9, face.landmarks * 0 + [[12, 14], [17, 14], [15, 17], [13, 20], [17, 20]])
    with pytest.raises(FitError, match="small.jpg"):
        fit_faces(img, [tiny], names=["small.jpg"])


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


def test_render_pair_pack_builds_saves_and_skips_bad_photos(tmp_path):
    from pifr.train.render_pairs import RenderPairPack, build

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    srcs = [(EXAMPLES / "mitchell_frontal.png", "mitchell_frontal.png"), (bad, "broken.jpg"),
            (EXAMPLES / "night_turned.png", "night_turned.png")]
    pack = build(srcs, rotations=2, seed=1)
    assert pack.manifest["photos"] == 2 and len(pack) == 4 and pack.manifest["skipped"] == {"InvalidImageError": 1}
    pack.save(tmp_path / "rr.npz")
    back = RenderPairPack.load(tmp_path / "rr.npz")
    assert list(back.sources) == ["mitchell_frontal.png", "night_turned.png"]
    inp, mask, tgt, lm = back.pair(3)
    assert inp.shape == tgt.shape == (128, 128, 3) and mask.shape == (128, 128) and lm.shape == (68, 2)
    assert back.photo[3] == 1 and abs(back.yaw_away[3] - back.yaw[1]) >= 15
    # The JPEG round trip keeps the pair aligned: the input matches its target where it has colour.
    m = mask & (inp.sum(2) > 30)
    assert np.abs(inp[m].astype(int) - tgt[m]).mean() < 40


def test_cli_rotate_writes_each_face_and_reports_bad_files(tmp_path, capsys):
    import shutil

    from PIL import Image

    from pifr.cli import main

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "night_frontal.png", src / "a.png")
    (src / "b.jpg").write_bytes(b"not an image")
    assert main(["rotate", str(src), "--yaw", "60", "-o", str(tmp_path / "out")]) == 2
    assert "b.jpg: InvalidImageError" in capsys.readouterr().err
    im = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert np.array_equal(im, pifr.rotate(src / "a.png", yaw=60).image)
    assert not (tmp_path / "out" / "b.png").exists()
    with pytest.raises(SystemExit):  # argparse: --yaw is required
        main(["rotate", str(src / "a.png"), "-o", str(tmp_path / "x.png")])


@pytest.mark.parametrize("yaw,pitch", [(30.0, 10.0), (89.0, 20.0), (-75.0, -15.0), (0.0, 40.0)])
def test_pose_angles_read_back_a_view_rotation_even_near_profile(yaw, pitch):
    """Pitch is the face direction's elevation, defined at ±90° of yaw (an Euler atan2 form read
    real CFP profiles as pitched 77° and refused them)."""
    from pifr.face3d import angles
    from pifr.rotation import view_rotation

    assert np.allclose(angles(view_rotation(yaw, pitch))[:2], (yaw, pitch), atol=1e-6)
