"""The benchmarks' embedding cache on real CFP images."""
from __future__ import annotations

import os

import numpy as np




def test_embedding_cache_is_per_image(cfp, tmp_path, monkeypatch):
    """benchmarks/_harness.embed_paths: a later run over a different set of files embeds only the
    files it has not seen (the cache is per image, not per batch), returns the same vectors for
    the rest, and re-embeds a file whose contents changed."""
    import shutil

    from benchmarks import _harness

    monkeypatch.setenv("PIFR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    src = cfp / "Data" / "Images" / "351"
    files = []
    for k, rel in enumerate(["frontal/01.jpg", "frontal/02.jpg", "profile/01.jpg"]):
        files.append(tmp_path / f"{k}.jpg")
        shutil.copy(src / rel, files[-1])
    (tmp_path / "noface.jpg").write_bytes(b"not an image")
    embedded = []  # every path the harness actually detects and embeds
    real = _harness._embed_chunk

    def counting(paths, *args):
        embedded.extend(paths)
        return real(paths, *args)

    monkeypatch.setattr(_harness, "_embed_chunk", counting)

    first = _harness.embed_paths(files[:2] + [tmp_path / "noface.jpg"], "mobilefacenet", "retinaface")
    assert len(embedded) == 3 and first[str(tmp_path / "noface.jpg")] is None
    assert float(first[str(files[0])] @ first[str(files[1])]) > 0.4  # same person, both frontal
    embedded.clear()
    second, yaws = _harness.embed_paths(files + [tmp_path / "noface.jpg"], "mobilefacenet", "retinaface",
                                        with_yaw=True)
    assert embedded == [str(files[2])]
    for f in files[:2]:
        np.testing.assert_array_equal(second[str(f)], first[str(f)])
    assert abs(yaws[str(files[2])]) > 45 and abs(yaws[str(files[0])]) < 30
    embedded.clear()
    shutil.copy(src / "frontal/03.jpg", files[0])
    os.utime(files[0], (1e9, 1e9))
    third = _harness.embed_paths(files, "mobilefacenet", "retinaface")
    assert embedded == [str(files[0])] and not np.array_equal(third[str(files[0])], first[str(files[0])])
