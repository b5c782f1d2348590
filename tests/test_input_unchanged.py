"""The images folder is never modified: a fingerprint of every file (path, size, sha256, mtime, mode) and
folder under it is identical before and after `coldseg select` and `coldseg embed`, on a folder full
of awkward entries (links, loops, hidden files, corrupt files, odd names, read-only files). The helper
itself (tests/_checksum.py) is checked to notice every kind of change first."""
from __future__ import annotations

import io
import json
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from _checksum import assert_same_tree, tree_checksums, tree_diff, unchanged
from conftest import write_pool

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore::UserWarning")]  # links and frames are warned about

TINY = ["--image-size", "32", "--epochs", "1", "--min-steps", "0", "--batch-size", "8", "--candidates", "crop,blur", "--quiet"]


#: readable, distinct images in awkward_pool: 9 + anim.gif + the CMYK jpeg + the rotated png + read-only.png
POOL_SIZE = 13


def buf_png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (7, 7, 7)).save(buf, format="PNG")
    return buf.getvalue()


def awkward_pool(root):
    """A pool of 9 good images plus every awkward entry the reader must leave alone."""
    ids = write_pool(root, 9)
    (root / "corrupt.png").write_bytes(os.urandom(200))
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / ".hidden").mkdir()
    shutil.copy(root / ids[0], root / ".hidden" / "h.png")
    shutil.copy(root / ids[1], root / "dup of one.png")                    # a byte-identical duplicate
    (root / "loop").symlink_to(".", target_is_directory=True)             # a folder loop
    (root / "gone.png").symlink_to("nowhere.png")                         # a dangling link
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:])
    Image.new("CMYK", (20, 20), (0, 255, 0, 0)).save(root / "cmyk, \"print\".jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (30, 20), (5, 80, 160)).save(root / "rotated é.png", exif=exif.tobytes())
    (root / "read-only.png").write_bytes((root / ids[2]).read_bytes()[:-1] + b"\0")  # readable, unwritable
    (root / "read-only.png").chmod(0o444)
    for raw in (b"caf\xe9.png", b"two\nlines.png"):  # names the reader refuses (skipped, not renamed)
        with open(os.fsencode(root) + b"/" + raw, "wb") as f:
            f.write(buf_png())
    old = time.time() - 10 * 86400
    os.utime(root / ids[3], (old, old))                                    # an old mtime to keep
    return ids


def test_checksums_notice_every_kind_of_change(tmp_path):
    root = tmp_path / "d"
    (root / "sub").mkdir(parents=True)
    (root / "a.bin").write_bytes(b"abcd")
    (root / "sub" / "b.bin").write_bytes(b"xyz")
    (root / "link").symlink_to("a.bin")
    base = tree_checksums(root)
    assert set(base) == {".", "a.bin", "sub", "sub/b.bin", "link"}
    assert tree_diff(base, tree_checksums(root)) == []

    def changed(mutate, undo):
        mutate()
        diff = tree_diff(base, tree_checksums(root))
        undo()
        return diff

    st = os.stat(root / "a.bin")
    keep_times = lambda: os.utime(root / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns))  # noqa: E731
    # same size, same mtime, other bytes: only the sha256 tells
    diff = changed(lambda: ((root / "a.bin").write_bytes(b"abce"), keep_times()),
                   lambda: ((root / "a.bin").write_bytes(b"abcd"), keep_times()))
    assert len(diff) == 1 and diff[0].startswith("changed 'a.bin'")
    diff = changed(lambda: os.utime(root / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9)), keep_times)
    assert len(diff) == 1 and diff[0].startswith("changed 'a.bin'")  # mtime only
    diff = changed(lambda: (root / "a.bin").chmod(0o600), lambda: (root / "a.bin").chmod(st.st_mode & 0o777))
    assert len(diff) == 1 and diff[0].startswith("changed 'a.bin'")  # permissions only
    assert any(d.startswith("added 'sub/.new'") for d in changed(
        lambda: (root / "sub" / ".new").write_bytes(b""), lambda: (root / "sub" / ".new").unlink()))
    assert any(d.startswith("removed 'sub/b.bin'") for d in changed(
        lambda: (root / "sub" / "b.bin").rename(root / "b.tmp"),
        lambda: (root / "b.tmp").rename(root / "sub" / "b.bin")))
    assert any(d.startswith("changed 'link'") for d in changed(
        lambda: ((root / "link").unlink(), (root / "link").symlink_to("sub")),
        lambda: ((root / "link").unlink(), (root / "link").symlink_to("a.bin"))))
    with pytest.raises(AssertionError, match="the folder was modified"):
        with unchanged(root):
            (root / "sub" / "c.bin").write_bytes(b"")


def test_select_with_training_leaves_the_images_folder_untouched(tmp_path, cli, tiny_cli):
    root = tmp_path / "pool"
    awkward_pool(root)
    with unchanged(root) as before:
        code, out, err = cli("select", root, "--budget", "3", "--out", tmp_path / "out", "--no-report",
                             "--cache-dir", tmp_path / "cache", *TINY)
    assert code == 0, err
    assert f"picked 3 of {POOL_SIZE} images" in out
    assert before["read-only.png"][4] == 0o444  # the fingerprint holds the modes it compared


def test_select_with_a_features_file_and_embed_leave_their_inputs_untouched(tmp_path, cli, tiny_cli):
    root = tmp_path / "pool"
    awkward_pool(root)
    feats = tmp_path / "feats"
    with unchanged(root):
        code, _, err = cli("embed", root, "--out", feats, "--cache-dir", tmp_path / "cache", *TINY)
    assert code == 0, err
    man = json.loads((feats / "manifest.json").read_text())
    assert man["pool"]["size"] == np.load(feats / "features.npy").shape[0] == POOL_SIZE
    before_feats = tree_checksums(feats)
    with unchanged(root):
        for strategy in ("ca", "kcenter"):
            code, _, err = cli("select", root, "--budget", "25%", "--out", tmp_path / f"out-{strategy}",
                               "--features", feats / "features.npy", "--strategy", strategy, "--no-report",
                               "--quiet")
            assert code == 0, err
    assert_same_tree(before_feats, tree_checksums(feats))


def test_failed_select_leaves_the_images_folder_untouched(tmp_path, cli):
    root = tmp_path / "pool"
    awkward_pool(root)
    with unchanged(root):
        code, _, err = cli("select", root, "--budget", "500", "--out", tmp_path / "out", "--no-report", *TINY)
    assert code == 2 and "exceeds the pool" in err
    assert not (tmp_path / "out").exists()


def test_python_api_leaves_a_read_only_pool_untouched(tmp_path):
    """The reader opens files for reading only: a pool whose files and folders are all read-only works."""
    import coldseg

    root = tmp_path / "pool"
    ids = write_pool(root, 6, subfolder=True)
    (root / "extra.png").write_bytes(buf_png())
    for p in sorted(root.rglob("*"), reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)
    root.chmod(0o555)
    try:
        with unchanged(root):
            res = coldseg.select(root, 3, out=tmp_path / "out", strategy="kcenter",
                                 features=np.random.default_rng(0).normal(size=(len(ids) + 1, 4)), report=False,
                                 progress=False)
        assert len(res.ids) == 3
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
