"""examples/ scripts on real faces."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

# The scripts import this tree's pifr (the test's), not whichever one is installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest.mark.parametrize("policy", [None, "never"])
def test_access_control_on_a_video(lfw, tmp_path, policy):
    import cv2

    import pifr
    from pifr.policy import DEFAULT_FRONTALIZE

    people = tmp_path / "people"
    for name in ("Tony_Blair", "Colin_Powell"):
        (people / name).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(lfw / name / f"{name}_{i:04d}.jpg", people / name)
    video = tmp_path / "door.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (250, 250))
    assert w.isOpened()
    for name, i in (("Tony_Blair", 5), ("Colin_Powell", 5), ("George_W_Bush", 1)):
        frame = cv2.imread(str(lfw / name / f"{name}_{i:04d}.jpg"))
        for _ in range(2):
            w.write(frame)
    w.release()
    log = tmp_path / "log.csv"
    switch = [] if policy is None else ["--frontalize", policy]
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "access_control.py"), "--enroll", str(people),
                        "--gallery", str(tmp_path / "g.gallery"), "--frames", str(video), "--every", "1", "--log", str(log),
                        *switch], capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    used = policy or DEFAULT_FRONTALIZE  # no switch: the Gallery default
    assert f"frontalize={used!r}" in r.stdout, r.stdout[:2000]
    rows = list(csv.DictReader(open(log)))
    # One decision per track: each person's two consecutive frames form one track (the faces at the
    # same place in the cut from one person to the next do not look alike, so they start another).
    main = {}
    for row in rows:  # the largest face's track of each frame is the subject's
        area = (float(row["x2"]) - float(row["x1"])) * (float(row["y2"]) - float(row["y1"]))
        first = row["frames"].split(";")[0]
        if area > main.get(first, (0, None))[0]:
            main[first] = (area, row)
    subjects = [r for _, (_, r) in sorted(main.items())]
    assert [r["identity"] for r in subjects] == ["Tony_Blair", "Colin_Powell", "unknown"], rows
    assert all(len(r["frames"].split(";")) == 2 and r["faces_used"] == "2" for r in subjects), rows
    assert (tmp_path / "g.gallery").is_file()
    assert pifr.Gallery.load(tmp_path / "g.gallery").frontalize == used  # the policy travels with the gallery


def test_frontalize_demo_runs_out_of_the_box(tmp_path):
    from PIL import Image

    out = tmp_path / "demo.png"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "frontalize_demo.py"), "-o", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    from pifr.refinement import refiner_available

    # Six example photos: input | 3D render | refined (only with a refiner installed) | true frontal
    # (the two turned examples have one).
    assert Image.open(out).size == ((3 + refiner_available()) * 128, 6 * 128)
