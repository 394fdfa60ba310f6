"""pifr.alignment on synthetic landmarks: similarity fit, the TP-GAN rule, bad input."""
from __future__ import annotations

import numpy as np
import pytest

import pifr
from pifr.alignment import ARCFACE_112, TPGAN_128, estimate_transform, get_template, similarity_transform, transform_points
from pifr.errors import ShapeError, UnknownModelError
from pifr.types import Face


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([12.0, -5.0])
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = s * src @ r.T + t
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], s * r, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-9)


def test_tpgan_rule_levels_eyes_and_sets_eye_mouth_distance():
    # A tilted, scaled, shifted frontal template: the TP-GAN rule must undo it.
    ang, s = -0.2, 2.3
    r = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    lm = TPGAN_128.array @ r.T * s + np.array([300.0, 150.0])
    out = transform_points(lm, estimate_transform(lm, TPGAN_128))
    assert abs(out[0, 1] - out[1, 1]) < 1e-6  # eye line level
    eye_mid, mouth_mid = out[:2].mean(0), out[3:].mean(0)
    assert mouth_mid[1] - eye_mid[1] == pytest.approx(48.0, abs=0.01)
    assert eye_mid[1] == pytest.approx(41.0, abs=0.01)


def test_tpgan_rule_keeps_profile_scale():
    # Foreshortened inter-eye distance (a turned head) must not shrink the output scale.
    lm = TPGAN_128.array.copy()
    lm[:, 0] = 64 + (lm[:, 0] - 64) * 0.3
    out = transform_points(lm, estimate_transform(lm, TPGAN_128))
    assert out[3:].mean(0)[1] - out[:2].mean(0)[1] == pytest.approx(48.0, abs=0.01)


def test_bad_landmarks_and_names():
    img = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ShapeError):
        pifr.align(img, np.zeros((4, 2)), TPGAN_128)
    with pytest.raises(ShapeError):
        pifr.align(img, np.full((5, 2), np.nan), TPGAN_128)
    with pytest.raises(ShapeError):
        pifr.align(img, np.zeros((5, 2)), ARCFACE_112)  # degenerate
    with pytest.raises(UnknownModelError):
        get_template("nope")
    with pytest.raises(ShapeError):
        pifr.align(np.zeros((64, 64)), Face([0, 0, 1, 1], 1.0, TPGAN_128.array), TPGAN_128)
