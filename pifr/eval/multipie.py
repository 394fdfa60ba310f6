"""The Multi-PIE layout (Gross et al. 2010): its 13 yaw cameras, its image names and the two
standard identity splits (Setting 1 and 2). Used by the Multi-PIE benchmarks and by
``pifr.train.pack`` to build training packs; reads file names only, never pixels.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

log = logging.getLogger("pifr")

#: Multi-PIE camera → yaw in degrees (sign as in protocols.md; papers differ, report ±).
MULTIPIE_CAMERA_YAW: Dict[str, int] = {
    "11_0": -90, "12_0": -75, "09_0": -60, "08_0": -45, "13_0": -30, "14_0": -15, "05_1": 0,
    "05_0": 15, "04_1": 30, "19_0": 45, "20_0": 60, "01_0": 75, "24_0": 90,
}
FRONTAL_CAMERA = "05_1"
#: A Multi-PIE image name: subject_session_recording_camera_illumination.png.
MULTIPIE_NAME = re.compile(r"^(\d{3})_(\d{2})_(\d{2})_(\d{3})_(\d{2})\.png$")


@dataclass(frozen=True)
class MultiPIEImage:
    path: Path
    subject: int
    session: int
    recording: int
    camera: str
    illumination: int

    @property
    def yaw(self) -> int:
        return MULTIPIE_CAMERA_YAW[self.camera]


def scan_multipie(root: Path, sessions: Sequence[int] = (1, 2, 3, 4)) -> List[MultiPIEImage]:
    """Every image of the 13 yaw cameras under ``root/session0S/multiview/SSS/RR/CC_C/``."""
    out: List[MultiPIEImage] = []
    root = Path(root)
    for s in sessions:
        base = root / f"session{s:02d}" / "multiview"
        if not base.is_dir():
            continue
        for cam_dir in base.glob("*/*/*"):
            cam = cam_dir.name
            if cam not in MULTIPIE_CAMERA_YAW:
                continue  # elevated cameras 08_1, 19_1 are not used
            for f in cam_dir.iterdir():
                m = MULTIPIE_NAME.match(f.name)
                if not m:
                    continue
                subj, sess, rec, camc, ill = m.groups()
                if f"{camc[:2]}_{camc[2]}" != cam or int(sess) != s:
                    log.warning("skipping %s: name does not match its folder", f)
                    continue
                out.append(MultiPIEImage(f, int(subj), int(sess), int(rec), cam, int(ill)))
    return sorted(out, key=lambda x: str(x.path))


@dataclass(frozen=True)
class MultiPIESplit:
    setting: int
    train_subjects: Tuple[int, ...]
    test_subjects: Tuple[int, ...]
    sessions: Tuple[int, ...]


def multipie_split(images: Sequence[MultiPIEImage], setting: int) -> MultiPIESplit:
    """Setting 1: session 1, the first 150 of its subjects train, the next 100 test. Setting 2: all
    sessions, the first 200 subjects train, the remaining (up to 137) test. Neutral expression
    (recording 01) only, as the protocols specify."""
    if setting == 1:
        sessions, n_train, n_test = (1,), 150, 100
    elif setting == 2:
        sessions, n_train, n_test = (1, 2, 3, 4), 200, 137
    else:
        raise ValueError("setting must be 1 or 2")
    subjects = sorted({im.subject for im in images if im.session in sessions and im.recording == 1})
    return MultiPIESplit(setting, tuple(subjects[:n_train]), tuple(subjects[n_train:n_train + n_test]), sessions)


def multipie_pairs(images: Sequence[MultiPIEImage], split: MultiPIESplit, part: str = "train",
                   target_illumination: int = 7) -> List[Tuple[MultiPIEImage, MultiPIEImage]]:
    """(input, target) pairs: each neutral image of a ``part`` subject paired with camera 05_1 of the
    same subject, session and recording under ``target_illumination`` (07 = frontal flash)."""
    subjects = set(split.train_subjects if part == "train" else split.test_subjects)
    frontal = {(im.subject, im.session, im.recording): im for im in images
               if im.camera == FRONTAL_CAMERA and im.illumination == target_illumination}
    pairs = []
    for im in images:
        if im.subject in subjects and im.session in split.sessions and im.recording == 1:
            t = frontal.get((im.subject, im.session, im.recording))
            if t is not None:
                pairs.append((im, t))
    return pairs
