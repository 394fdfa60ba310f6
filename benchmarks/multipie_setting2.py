"""Multi-PIE Setting 2: per-angle rank-1 (±15…±90 and 0), ROC curves and TAR@FAR per method.

    python benchmarks/multipie_setting2.py --root MULTIPIE --out DIR [--embedders …] [--generator G] [--model3d M]

Protocol and outputs: see benchmarks/_multipie.py. Without the licensed data, build a
Multi-PIE-shaped tree from real faces first: python benchmarks/multipie_fixture.py --setting 2 --out /tmp/mpie
"""
if not __package__:  # run as `python benchmarks/<name>.py`: _root puts the repository root on sys.path
    import _root  # noqa: F401
from benchmarks._multipie import run

if __name__ == "__main__":
    run(2)
