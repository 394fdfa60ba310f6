"""frontalize() with a tiny random-init TP-GAN generator, and the pose policy shared by verify,
embed, Gallery and the CLI."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from safetensors.torch import save_file

import pifr
from pifr.frontalization import Frontalizer, to_template
from pifr.models.tpgan import Generator

from tests.conftest import EXAMPLES


def test_frontalize_one_and_many(gen_file, tmp_path):
    r = pifr.frontalize(EXAMPLES / "mitchell_turned.png", weights=gen_file)
    assert isinstance(r, pifr.Frontalized)
    assert r.image.shape == (128, 128, 3) and r.image.dtype == np.uint8
    assert r.yaw > 25 and r.face.yaw == r.yaw
    again = pifr.frontalize(EXAMPLES / "mitchell_turned.png", weights=gen_file)
    assert np.array_equal(again.image, r.image)  # deterministic (zero noise at inference)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    night = pifr.frontalize(EXAMPLES / "night_turned.png", weights=gen_file)
    turned = np.ascontiguousarray(pifr.load_image(EXAMPLES / "mitchell_turned.png")[:, ::-1])  # faces the other way
    single = pifr.frontalize(turned, weights=gen_file)
    assert night.yaw * single.yaw < 0  # so the batch below mixes mirrored and plain crops
    out = pifr.frontalize([EXAMPLES / "night_turned.png", bad, np.zeros((64, 64, 3), np.uint8), turned],
                          weights=gen_file, batch_size=2)
    assert isinstance(out[1], pifr.InvalidImageError) and isinstance(out[2], pifr.NoFaceError)
    # The two good faces went through the generator in one batch, and match the one-at-a-time
    # results (up to a rounding step: batched convolutions may sum in another order).
    for got, want in ((out[0], night), (out[3], single)):
        assert isinstance(got, pifr.Frontalized) and got.yaw == want.yaw
        assert np.abs(got.image.astype(int) - want.image.astype(int)).max() <= 1


def test_mirrored_input_gives_mirrored_output(gen_file):
    fr = Frontalizer(gen_file)
    crop = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    lm = np.array([[44, 41], [86, 41], [64, 65], [48, 89], [82, 89]], np.float32)
    a = fr.frontalize_crops(crop[None], lm[None], [60.0])[0]
    from pifr.alignment import mirror

    mc, ml = mirror(crop, lm)
    b = fr.frontalize_crops(mc[None], ml[None], [-60.0])[0]
    assert np.array_equal(a, b[:, ::-1])


def test_policies_in_verify_and_embed(gen_file):
    r = pifr.verify(EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_turned.png", frontalize="auto",
                    frontalizer=gen_file, yaw_threshold=30)
    assert r.frontalized == (False, True)
    r = pifr.verify(EXAMPLES / "mitchell_frontal.png", EXAMPLES / "mitchell_turned.png", frontalize="always", frontalizer=gen_file,
                    threshold=0.5)
    assert r.frontalized == (True, True)
    v = pifr.embed(EXAMPLES / "night_turned.png", frontalize="always", frontalizer=str(gen_file))
    assert v.shape == (128,) and abs(np.linalg.norm(v) - 1) < 1e-4


def test_auto_fusion_weight_blends_raw_and_frontalized(gen_file):
    """w = 0 gives the raw embedding, w = 1 the frontalized one, and w = 0.5 the normalised mean."""
    from pifr.embedders import get_embedder
    from pifr.frontalization import get_frontalizer
    from pifr.frontalization import embed_face_policy

    arr = pifr.load_image(EXAMPLES / "mitchell_turned.png")
    from pifr.detection import detect_one

    face = detect_one(arr, yaw=True)
    emb, gen = get_embedder("mobilefacenet"), get_frontalizer(gen_file)
    raw = embed_face_policy(arr, face, emb, "never", None, 30)[0]
    front = embed_face_policy(arr, face, emb, "always", gen, 30)[0]
    assert float(raw @ front) < 0.99  # the (untrained) generator changes the face
    w0, used = embed_face_policy(arr, face, emb, "auto", gen, 30, fusion_weight=0.0)
    assert used and np.allclose(w0, raw, atol=1e-5)
    assert np.allclose(embed_face_policy(arr, face, emb, "auto", gen, 30, fusion_weight=1.0)[0], front, atol=1e-6)
    half = embed_face_policy(arr, face, emb, "auto", gen, 30, fusion_weight=0.5)[0]
    mean = (raw + front) / np.linalg.norm(raw + front)
    assert np.allclose(half, mean, atol=1e-5) and abs(np.linalg.norm(half) - 1) < 1e-5
    # Above the threshold only: a high threshold leaves the face raw.
    high, used = embed_face_policy(arr, face, emb, "auto", gen, 89, fusion_weight=0.5)
    assert not used and np.allclose(high, raw)


def test_to_template_keeps_a_frontal_face_aligned():
    from pifr.alignment import DLIB_150, TPGAN_128, transform_points, similarity_transform

    m = similarity_transform(TPGAN_128.array, DLIB_150.array)
    assert np.abs(transform_points(TPGAN_128.array, m) - DLIB_150.array).max() < 3.0
    assert to_template(np.zeros((128, 128, 3), np.uint8), DLIB_150).shape == (150, 150, 3)


def test_bad_generator_files(tmp_path):
    p = tmp_path / "junk.safetensors"
    p.write_bytes(b"\x00" * 64)
    with pytest.raises(pifr.WeightsFormatError):
        Frontalizer(p)
    g = Generator(width=0.125)
    q = tmp_path / "wrong_width.safetensors"
    save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(q), metadata={"config": json.dumps({"width": 0.25})})
    with pytest.raises(pifr.WeightsFormatError):
        Frontalizer(q)
    with pytest.raises(pifr.WeightsNotFoundError):
        Frontalizer(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("mode,thr,w", [
    ("Auto", 45, 0.25), ("AUTO", 45, 0.25), ("sometimes", 45, 0.25), (None, 45, 0.25), (True, 45, 0.25),
    ("auto", -1, 0.25), ("auto", 91, 0.25), ("auto", float("nan"), 0.25), ("auto", "45", 0.25),
    ("auto", 45, -0.1), ("auto", 45, 1.5), ("auto", 45, float("nan")), ("auto", 45, True),
])
def test_one_validation_refuses_every_bad_policy(mode, thr, w):
    from pifr.frontalization import validate_policy

    with pytest.raises(pifr.InvalidPolicyError) as e:
        validate_policy(mode, thr, w)
    assert isinstance(e.value, ValueError) and not isinstance(e.value, pifr.UnknownModelError)


def test_validation_accepts_the_modes_and_the_range_ends():
    from pifr.frontalization import AUTO_FUSION_WEIGHT, AUTO_YAW_THRESHOLD, FRONTALIZE_MODES, validate_policy

    assert FRONTALIZE_MODES == ("never", "always", "auto")
    for m in FRONTALIZE_MODES:
        assert validate_policy(m) == (m, None, None)  # None: the rule measured for the embedder
        assert validate_policy(m, AUTO_YAW_THRESHOLD, AUTO_FUSION_WEIGHT) == (m, AUTO_YAW_THRESHOLD, AUTO_FUSION_WEIGHT)
    assert validate_policy("auto", 0, 1) == ("auto", 0.0, 1.0)
    assert validate_policy("auto", np.float32(90), np.int64(0)) == ("auto", 90.0, 0.0)


def test_every_entry_point_refuses_a_near_miss_mode_before_loading_anything(monkeypatch):
    """``"Auto"`` once fell through to raw embeddings in Gallery; verify/embed said "model not
    registered". Now all of them raise the same typed error, before any network is built."""
    import pifr.embedders as E

    monkeypatch.setattr(E, "get_embedder", lambda *a, **k: pytest.fail("a network was loaded"))
    for call in (lambda: pifr.Gallery(frontalize="Auto"), lambda: pifr.verify(EXAMPLES / "night_frontal.png",
                 EXAMPLES / "night_turned.png", frontalize="Auto"), lambda: pifr.embed(EXAMPLES / "night_turned.png",
                 frontalize="Auto"), lambda: pifr.Gallery(frontalize="auto", yaw_threshold=120),
                 lambda: pifr.verify(EXAMPLES / "night_frontal.png", EXAMPLES / "night_turned.png", fusion_weight=2)):
        with pytest.raises(pifr.InvalidPolicyError):
            call()


def test_gallery_verify_and_embed_pass_the_same_policy_parameters(monkeypatch, tmp_path):
    """The yaw threshold and fusion weight given to Gallery, verify and embed are the ones the
    policy runs with (Gallery once hard-coded them), and a saved gallery keeps them."""
    import pifr.embedders as E
    import pifr.gallery.enrollment as G
    import pifr.verification as V

    seen = []

    def spy(arr, face, emb, mode, gen, yaw_threshold=None, fusion_weight=None):
        seen.append((mode, yaw_threshold, fusion_weight))
        return emb.embed_crops(emb.align(arr, face)[None])[0], False

    for mod in (E, G, V):
        monkeypatch.setattr(mod, "embed_face_policy", spy)
    for mod in (E, G, V):
        monkeypatch.setattr(mod, "frontal_view", lambda *a, **k: None)
    img = EXAMPLES / "night_turned.png"
    pifr.verify(img, img, embedder="mobilefacenet", frontalize="auto", yaw_threshold=30, fusion_weight=0.5)
    pifr.embed(img, embedder="mobilefacenet", frontalize="auto", yaw_threshold=31, fusion_weight=0.6)
    g = pifr.Gallery("mobilefacenet", frontalize="auto", yaw_threshold=32, fusion_weight=0.7)
    g.enroll("night", [img])
    assert seen == [("auto", 30.0, 0.5)] * 2 + [("auto", 31.0, 0.6), ("auto", 32.0, 0.7)]
    g.save(tmp_path / "g.gallery")
    h = pifr.Gallery.load(tmp_path / "g.gallery")
    assert (h.frontalize, h.yaw_threshold, h.fusion_weight) == ("auto", 32.0, 0.7)


def test_no_registered_frontalizer_is_a_clear_error_and_a_bad_checksum_surfaces(tmp_path, monkeypatch):
    import pifr.weights as W

    monkeypatch.setattr(W, "list_weights", lambda task=None: [])
    with pytest.raises(pifr.WeightsNotFoundError, match="pass weights="):
        Frontalizer()
    f = tmp_path / "shipped_generator.safetensors"
    f.write_bytes(b"not the registered file")
    spec = W.WeightSpec(name="tpgan_test", task="frontalizer", arch="TP-GAN", file=f.name, sha256="0" * 64,
                        format="safetensors", location="shipped")
    monkeypatch.setattr(W, "list_weights", lambda task=None: [spec] if task == "frontalizer" else [])
    monkeypatch.setenv("PIFR_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(pifr.WeightsChecksumError):
        Frontalizer()


def test_frontalize_works_out_of_the_box_with_the_shipped_refiner():
    """The refiner ships, so the default method refines the 3D render: the whole crop filled (the
    render leaves the surround black), a face the yaw estimator reads as frontal."""
    f = pifr.frontalize(EXAMPLES / "mitchell_turned.png")
    assert f.generator == "3d-render+refiner:refiner.safetensors" and f.image.shape == (128, 128, 3)
    assert f.image[~f.mask].mean() > 20
    assert abs(pifr.estimate_yaw(np.ascontiguousarray(np.pad(f.image, ((40, 40), (40, 40), (0, 0)), mode="edge")))) < 10


def test_frontalize_3d_render(tmp_path):
    """method="3d": a frontal face in the TP-GAN crop that the yaw estimator reads as frontal, a
    mask, and one result or error per list item."""
    f = pifr.frontalize(EXAMPLES / "mitchell_turned.png", method="3d")
    assert f.generator == "3d-render" and f.image.shape == (128, 128, 3) and f.mask.mean() > 0.4
    assert abs(f.yaw - 52) < 8
    assert abs(pifr.estimate_yaw(np.ascontiguousarray(np.pad(f.image, ((40, 40), (40, 40), (0, 0)))))) < 10
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"nope")
    out = pifr.frontalize([EXAMPLES / "night_turned.png", bad], method="3d")
    assert out[0].generator == "3d-render" and isinstance(out[1], pifr.InvalidImageError)
    with pytest.raises(pifr.UnknownModelError, match="no weights"):
        pifr.frontalize(EXAMPLES / "night_turned.png", method="3d", weights="model3Ddlib.mat")


def test_a_rule_with_view_yaws_renders_the_face_turned_on_its_own_side_and_pools_the_views(monkeypatch):
    """An AutoRule with ``view_yaws`` embeds a turned face fused with its renders at ±each yaw (the
    sign of the face's yaw), pooled (the normalised mean of their embeddings), from one 3D fit; a
    rule without them asks for the frontal view; a face the rule leaves alone is embedded raw."""
    from pifr import frontalization as F
    from pifr import face3d
    from pifr.detection import detect_one
    from pifr.embedders import get_embedder

    asked, fits = [], []
    real_views, real_fit = F.Render3D.view_crops, face3d.fit_faces

    def spy(self, arr, face, template, yaws):
        asked.append(list(yaws))
        return real_views(self, arr, face, template, yaws)

    def count_fits(*a, **k):
        fits.append(1)
        return real_fit(*a, **k)

    monkeypatch.setattr(F.Render3D, "view_crops", spy)
    monkeypatch.setattr(face3d, "fit_faces", count_fits)
    emb = get_embedder("mobilefacenet")
    arr = pifr.load_image(EXAMPLES / "mitchell_turned.png")
    face = detect_one(arr)
    assert face.yaw > 30
    monkeypatch.setitem(F.AUTO_RULES, "mobilefacenet", F.AutoRule(30.0, 0.75, 0.0, view_yaws=(45.0,)))
    v45, fused = F.embed_face_policy(arr, face, emb, "auto", F.Render3D())
    assert fused and asked == [[45.0]]
    mirrored = dataclasses.replace(face, yaw=-face.yaw)
    F.embed_face_policy(arr, mirrored, emb, "auto", F.Render3D())
    assert asked[-1] == [-45.0]
    monkeypatch.setitem(F.AUTO_RULES, "mobilefacenet", F.AutoRule(30.0, 1.0, 0.0, view_yaws=(15.0, 45.0)))
    fits.clear()
    pooled, _ = F.embed_face_policy(arr, face, emb, "auto", F.Render3D())
    assert asked[-1] == [15.0, 45.0] and len(fits) == 1  # one fit, two renders
    crops = F.Render3D().view_crops(arr, face, emb.template, [15.0, 45.0])
    each = emb.embed_crops(crops)
    expect = each.mean(0) / np.linalg.norm(each.mean(0))
    assert np.allclose(pooled, expect, atol=1e-5) and abs(float(np.linalg.norm(pooled)) - 1) < 1e-5
    assert float(each[0] @ each[1]) < 0.9999  # two views, two embeddings: the pool is neither

    class OneAtATime:  # a caller's view with frontal_crop(yaw=) only: asked view by view
        def frontal_crop(self, arr, face, template, yaw=0.0):
            return F.Render3D().frontal_crop(arr, face, template, yaw)

    alone, _ = F.embed_face_policy(arr, face, emb, "auto", OneAtATime())
    assert np.allclose(alone, pooled, atol=1e-5)
    monkeypatch.setitem(F.AUTO_RULES, "mobilefacenet", F.AutoRule(30.0, 0.75, 0.0))
    v0, _ = F.embed_face_policy(arr, face, emb, "auto", F.Render3D())
    assert asked[-1] == [0.0] and float(v0 @ v45) < 0.9999  # a different view, a different embedding
    monkeypatch.setitem(F.AUTO_RULES, "mobilefacenet", F.AutoRule(80.0, 0.75, 0.0, view_yaws=(45.0,)))
    n = len(asked)
    _, fused = F.embed_face_policy(arr, face, emb, "auto", F.Render3D())
    assert not fused and len(asked) == n


@pytest.mark.parametrize("bad", [(), (95.0,), (float("nan"),), (-10.0,), 45.0, "45", ("x",), (None,)])
def test_auto_rule_refuses_view_yaws_outside_0_to_90(bad):
    from pifr.frontalization import AutoRule

    with pytest.raises(pifr.InvalidPolicyError, match="view_yaws"):
        AutoRule(30.0, 0.5, view_yaws=bad)


def test_view_fingerprint_follows_the_rule_the_fit_and_the_view_without_loading_a_network(monkeypatch, gen_file):
    """view_fingerprint changes with each thing a fused template is made from — the rule, the 3D
    fit's weights, the kind of view, a refiner's or generator's weights — and with nothing else;
    it builds no network."""
    import pifr.frontalization as F
    import pifr.refinement as R
    import pifr.weights as W
    from pifr.frontalization import view_fingerprint

    def no_network(*a, **k):
        raise AssertionError("view_fingerprint loaded a network")

    monkeypatch.setattr(R, "get_refiner", no_network)
    monkeypatch.setattr(F, "get_frontalizer", no_network)
    base = view_fingerprint("dlib_resnet")
    assert len(base) == 16 and base == view_fingerprint("dlib_resnet", "3d")  # None is the plain render here
    assert view_fingerprint("dlib_resnet", mode="never") is None
    assert view_fingerprint("no_such_embedder") is None  # "auto" without a rule fuses nothing
    others = {view_fingerprint("dlib_resnet", mode="always"), view_fingerprint("dlib_resnet", "refined"),
              view_fingerprint("dlib_resnet", str(gen_file)), view_fingerprint("dlib_resnet", fusion_weight=0.75),
              view_fingerprint("mobilefacenet")}
    assert len(others) == 5 and base not in others
    # The threshold shift only moves decisions, not templates; the view yaw and weight make them.
    rule = F.AUTO_RULES["dlib_resnet"]
    monkeypatch.setitem(F.AUTO_RULES, "dlib_resnet", dataclasses.replace(rule, threshold_shift=0.5))
    assert view_fingerprint("dlib_resnet") == base
    monkeypatch.setitem(F.AUTO_RULES, "dlib_resnet", dataclasses.replace(rule, view_yaws=(45.0,)))
    assert view_fingerprint("dlib_resnet") != base
    monkeypatch.setitem(F.AUTO_RULES, "dlib_resnet", rule)
    # A re-trained fit network (a new sha256 in the manifest) changes every render.
    specs = dict(W.registry())
    specs["tddfa_mb05"] = dataclasses.replace(specs["tddfa_mb05"], sha256="0" * 64)
    monkeypatch.setattr(W, "registry", lambda: specs)
    assert view_fingerprint("dlib_resnet") != base
    assert view_fingerprint("dlib_resnet", str(gen_file)) in others  # a generator reads no 3D fit


def test_rules_come_from_a_validated_data_file(tmp_path):
    """The rules are data: each with the split, command and figures that chose it; a malformed or
    out-of-range file is refused with a typed error, never half-read."""
    from pifr import frontalization as F
    from pifr.errors import InvalidPolicyError

    data = json.loads(F.RULES_FILE.read_text())
    assert data["schema"] == 1
    for name, r in data["rules"].items():
        assert r["split"].startswith("tune") and r["chosen_by"] and r["figures"], name
    assert F.load_rules() == F.AUTO_RULES
    bad = tmp_path / "rules.json"
    for text in ("{", json.dumps({"schema": 2, "rules": {}}),
                 json.dumps({"schema": 1, "rules": {"x": {"yaw_threshold": 30, "fusion_weight": 0.5}}}),
                 json.dumps({"schema": 1, "rules": {"x": {"yaw_threshold": 130, "fusion_weight": 0.5,
                                                          "threshold_shift": 0, "view_yaws": [0]}}})):
        bad.write_text(text)
        with pytest.raises(InvalidPolicyError):
            F.load_rules(bad)
