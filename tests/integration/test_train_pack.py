"""python -m pifr.train.pack: JPEG quality and merges."""
from __future__ import annotations

import numpy as np

from pifr.train.data import Pack, PairDataset


def test_quality_applies_when_a_pack_is_built_too(cfp, small_pack, tmp_path):
    """`pack --cfp ... --quality 60` stores its crops at 60, not silently at the default 95 (the
    flag once worked with --merge alone): same records as the JPEG-95 build, far fewer bytes."""
    from pifr.train.pack import main as pack_main

    out = tmp_path / "q60.npz"
    assert pack_main(["--cfp", str(cfp), "--identities", "351-351", "--quality", "60", "--out", str(out)]) == 0
    q60, src = Pack.load(out), Pack.load(small_pack)
    q95 = src.subset(src.identity == 351)
    assert q60.manifest["jpeg_quality"] == 60 and len(q60) == len(q95)
    assert np.allclose(q60.landmarks, q95.landmarks, atol=0.5)
    assert q60.offsets[-1] < 0.7 * q95.offsets[-1], (q60.offsets[-1], q95.offsets[-1])


def test_merge_reencodes_and_samples_identities_for_carrying(small_pack, tmp_path):
    """`pack --merge`: one file from several packs, smaller at a lower JPEG quality, with every
    record of the sampled identities and their fields intact."""
    from pifr.train.pack import main as pack_main

    src = Pack.load(small_pack)
    rest, part, out = tmp_path / "rest.npz", tmp_path / "part.npz", tmp_path / "merged.npz"
    src.subset(src.identity != 351).save(rest)
    src.subset(src.identity == 351).save(part)
    assert pack_main(["--merge", str(rest), str(part), "--quality", "60", "--sample-identities", "2", "--out", str(out)]) == 0
    m = Pack.load(out)
    kept = np.unique(m.identity)
    assert len(kept) == 2 and set(kept.tolist()) <= set(src.identity.tolist()) and m.manifest["jpeg_quality"] == 60
    # Records in merged order: `rest`'s first, then `part`'s.
    idx = np.r_[np.flatnonzero((src.identity != 351) & np.isin(src.identity, kept)),
                np.flatnonzero((src.identity == 351) & np.isin(src.identity, kept))]
    assert len(m) == len(idx)
    assert np.array_equal(m.landmarks, src.landmarks[idx]) and np.array_equal(m.yaw, src.yaw[idx])
    assert np.array_equal(m.frontal, src.frontal[idx])
    assert m.offsets[-1] < 0.7 * np.diff(src.offsets)[idx].sum()
    diff = [np.abs(m.image(k).astype(int) - src.image(int(i)).astype(int)).mean() for k, i in enumerate(idx[:10])]
    assert max(diff) < 6, diff
    few = tmp_path / "few.npz"
    assert pack_main(["--merge", str(small_pack), "--max-frontal-photos", "2", "--out", str(few)]) == 0
    f = Pack.load(few)
    for ident in np.unique(src.identity):
        assert (f.frontal & (f.identity == ident)).sum() == min(2, (src.frontal & (src.identity == ident)).sum())
        assert (~f.frontal & (f.identity == ident)).sum() == (~src.frontal & (src.identity == ident)).sum()
    assert len(PairDataset(f, identities=range(1, 4))) == 2 * (~f.frontal & np.isin(f.identity, [1, 2, 3])).sum()
