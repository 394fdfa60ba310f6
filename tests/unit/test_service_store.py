"""The service's gallery-file store: writes under the file lock lose nothing when two stores (as
two servers would) write at once, each sees the other's writes, and a reader never sees a torn file."""
from __future__ import annotations


import numpy as np
import pytest

from pifr.gallery import Gallery
from pifr.service.store import FileStore, Template, append_templates

from tests.conftest import write_concurrently


def _templates(dim, seed, n=1, image0=0):
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, dim)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return [Template(image0 + i, v, f"hash-{seed}-{i}", "raw") for i, v in enumerate(e)]


def test_store_creates_the_file_and_another_store_sees_its_writes(tmp_path):
    path = tmp_path / "g.gallery"
    a, b = FileStore(path, 0.01), FileStore(path, 0.01)
    assert not path.exists() and a.snapshot().templates == 0 and a.version() is None
    dim = a.snapshot().dim
    r = a.add_templates("ann", _templates(dim, 1, 2))
    assert r.added == 2 and r.duplicates == ()
    assert path.is_file() and Gallery.load(path).template_counts() == {"ann": 2}
    v = a.version()
    assert b.snapshot().template_counts() == {"ann": 2}  # b reloads: the file changed
    assert b.snapshot().far_per_probe == 0.01
    # The same pixels again (any subject) are duplicates; one new image is added.
    r = b.add_templates("bob", _templates(dim, 1, 1) + _templates(dim, 2, 1, image0=1))
    assert (r.added, r.duplicates) == (1, (0,))
    assert a.version() != v and a.snapshot().template_counts() == {"ann": 2, "bob": 1}
    assert a.remove_subject("ann") == 2 and a.remove_subject("ann") == 0
    assert b.snapshot().template_counts() == {"bob": 1}


def test_two_stores_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "g.gallery"
    stores = [FileStore(path, 0.01), FileStore(path, 0.01)]
    dim = stores[0].snapshot().dim
    write_concurrently(stores, 4, 15, lambda k, i: _templates(dim, 1000 * k + i))
    counts = Gallery.load(path).template_counts()
    assert len(counts) == 60 and set(counts.values()) == {1}
    assert len(stores[0].snapshot()) == len(stores[1].snapshot()) == 60


def test_a_store_refuses_a_missing_folder_and_a_corrupt_file(tmp_path):
    from pifr.errors import GalleryError

    with pytest.raises(GalleryError):
        FileStore(tmp_path / "nope" / "g.gallery", 0.01)
    bad = tmp_path / "bad.gallery"
    bad.write_bytes(b"not a gallery")
    with pytest.raises(GalleryError):
        FileStore(bad, 0.01)


def test_appended_templates_are_searched_at_once_and_duplicates_skipped():
    """append_templates goes through the gallery's own append: a search index built before it is
    rebuilt (with faiss from the first template), and a repeated hash is skipped."""
    e = Gallery(threshold=0.5, frontalize="never")
    e.search_backend = "faiss"
    first = _templates(e.dim, 3, 1)
    append_templates(e, "x", first)
    assert e.search_embedding(first[0].vector)[0].identity == "x"
    later = _templates(e.dim, 4, 2)
    r = append_templates(e, "y", later[1:] + _templates(e.dim, 3, 1))
    assert (r.added, r.duplicates) == (1, (0,)) and e.templates == 2
    assert e.search_embedding(later[1].vector)[0].identity == "y"  # not the index built before


def test_a_store_removes_temporary_files_of_dead_writers_only(tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f".g.gallery.{dead_pid}.123.tmp"
    mine = tmp_path / f".g.gallery.{os.getpid()}.456.tmp"
    other = tmp_path / ".other.gallery.1.1.tmp"
    for p in (left, mine, other):
        p.write_bytes(b"partial")
    FileStore(tmp_path / "g.gallery", 0.01)
    assert not left.exists() and mine.exists() and other.exists()
