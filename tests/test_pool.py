"""The pool reader on bad and unusual input: corrupt, empty and non-image files, every pixel format,
16-bit stretching, byte-identical duplicates and ids. No training: selections use given features."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import coldseg
from coldseg.data.pool import PoolError, load_pool, to_uint8

S = 32  # working size of these tests


def _features(n, d=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_ids_are_sorted_relative_posix_paths_including_subfolders(tmp_path, make_pool):
    root = tmp_path / "pool"
    expected = make_pool(root, 9)
    (root / "a" / "b").mkdir(parents=True)
    Image.new("RGB", (20, 20), (1, 2, 3)).save(root / "a" / "b" / "deep.png")
    pool = load_pool(root, S, progress=False)
    assert pool.ids == sorted(expected + ["a/b/deep.png"])
    assert "a/b/deep.png" in pool.ids and any(i.startswith("sub/") for i in pool.ids)
    assert all("\\" not in i and not i.startswith("/") for i in pool.ids)
    for k, i in enumerate(pool.ids):
        assert pool.path(k) == root / i and pool.path(k).is_file()
    assert pool.images.shape == (10, 3, S, S) and pool.images.dtype == np.uint8


def test_corrupt_and_empty_files_are_skipped_reported_and_in_manifest(tmp_path, make_pool, capsys):
    root = tmp_path / "pool"
    good = make_pool(root, 6, subfolder=False)
    (root / "broken.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "empty.jpg").write_bytes(b"")
    # a truncated PNG: valid header, cut-off data
    full = (root / good[0]).read_bytes()
    (root / "truncated.png").write_bytes(full[: len(full) // 3])

    pool = load_pool(root, S, progress=False)
    assert pool.ids == good
    skipped = {s["id"]: s["reason"] for s in pool.skipped}
    assert set(skipped) == {"broken.png", "empty.jpg", "truncated.png"}
    assert skipped["empty.jpg"] == "empty file (0 bytes)"
    assert "UnidentifiedImageError" in skipped["broken.png"]
    assert all(r for r in skipped.values())  # every skip names a reason
    err = capsys.readouterr().err
    for name in skipped:
        assert f"skipped unreadable {name}" in err

    out = tmp_path / "out"
    res = coldseg.select(root, 3, out=out, strategy="random", features=_features(len(good)), report=False,
                         progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert {s["id"] for s in man["pool"]["skipped"]} == set(skipped)
    assert {s["id"]: s["reason"] for s in man["pool"]["skipped"]} == skipped
    assert man["pool"]["size"] == len(good) == len(res.pool)
    assert not set(res.ids) & set(skipped)


def test_non_image_file_is_ignored_and_counted(tmp_path, make_pool):
    root = tmp_path / "pool"
    good = make_pool(root, 4, subfolder=False)
    (root / "notes.txt").write_text("not an image")
    (root / "sub").mkdir()
    (root / "sub" / "labels.csv").write_text("a,b\n")
    pool = load_pool(root, S, progress=False)
    assert pool.ids == good
    assert pool.ignored == 2
    assert pool.skipped == []  # ignored, not "unreadable"

    out = tmp_path / "out"
    coldseg.select(root, 2, out=out, strategy="random", features=_features(4), report=False, progress=False)
    assert json.loads((out / "manifest.json").read_text())["pool"]["ignored_non_image_files"] == 2


def test_mixed_sizes_and_modes_all_load_to_3xSxS_uint8(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "rgb.png")
    Image.fromarray(rgb[:, :, 0]).save(root / "gray_L.png")                    # L
    Image.fromarray(np.dstack([rgb[:17], np.full((17, 50), 128, np.uint8)])).save(root / "rgba.png")
    Image.fromarray(rgb).convert("P").save(root / "palette.png")               # P
    Image.fromarray(rng.integers(0, 65536, (45, 23), dtype=np.uint16)).save(root / "sixteen.png")  # I;16
    Image.fromarray(rgb[::-1]).save(root / "scan.tif")                          # TIFF
    Image.fromarray(rgb[:, ::-1]).save(root / "old.bmp")                        # BMP
    Image.fromarray(rgb[:20, :20]).save(root / "photo.jpeg", quality=90)        # JPEG
    modes = {p.name: Image.open(p).mode for p in root.iterdir()}
    assert modes["gray_L.png"] == "L" and modes["rgba.png"] == "RGBA" and modes["palette.png"] == "P"
    assert modes["sixteen.png"].startswith("I")  # 16-bit stays 16-bit on disk

    pool = load_pool(root, S, progress=False)
    assert pool.skipped == []
    assert len(pool) == 8
    assert pool.images.shape == (8, 3, S, S) and pool.images.dtype == np.uint8
    assert pool.grayscale is False  # mixed pool
    gray = pool.images[pool.ids.index("gray_L.png")]
    assert np.array_equal(gray[0], gray[1]) and np.array_equal(gray[1], gray[2])


def test_rgba_drops_alpha_and_palette_keeps_colours(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    a = np.zeros((S, S, 4), np.uint8)
    a[..., 0], a[..., 1], a[..., 2], a[..., 3] = 10, 20, 30, 0  # fully transparent pixels keep their colour
    Image.fromarray(a, "RGBA").save(root / "rgba.png")
    p = Image.new("P", (S, S))
    p.putpalette([200, 100, 50] + [0] * 765)
    p.save(root / "pal.png")
    pool = load_pool(root, S, progress=False)
    assert pool.images[pool.ids.index("rgba.png")][:, 0, 0].tolist() == [10, 20, 30]
    assert pool.images[pool.ids.index("pal.png")][:, 5, 5].tolist() == [200, 100, 50]


def test_12_bit_data_in_16_bit_png_is_stretched_to_full_range(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    v = np.linspace(0, 4095, S * S).round().astype(np.uint16).reshape(S, S)  # 12-bit X-ray style values
    Image.fromarray(v).save(root / "xray.png")  # S x S: no resize, so the values can be checked exactly
    pool = load_pool(root, S, progress=False)
    img = pool.images[0]
    assert img.min() == 0 and img.max() == 255  # not nearly black (4095 / 65535 * 255 = 16)
    expected = np.round(v.astype(np.float64) / 4095 * 255).astype(np.uint8)
    assert np.array_equal(img[0], expected)
    assert np.array_equal(img[0], img[2])
    assert pool.grayscale is True


def test_constant_16_bit_image_becomes_black_not_nan():
    arr, gray = to_uint8(Image.fromarray(np.full((4, 4), 777, np.uint16)))
    assert gray and arr.shape == (4, 4, 3) and arr.max() == 0


@pytest.mark.filterwarnings("ignore:.*fewer images than the equal share")
def test_byte_identical_duplicates_are_collapsed_and_never_both_picked(tmp_path, make_pool, capsys):
    root = tmp_path / "pool"
    ids = make_pool(root, 9, subfolder=False)
    (root / "zcopies").mkdir()
    shutil.copy(root / ids[0], root / "zcopies" / "again.png")
    shutil.copy(root / ids[0], root / "zz_third.png")   # same content three times
    shutil.copy(root / ids[4], root / "zcopies" / "other.png")
    pool = load_pool(root, S, progress=False)
    assert pool.ids == ids  # the first of each (sorted order) is kept
    dups = {d["id"]: d["same_as"] for d in pool.duplicates}
    assert dups == {"zcopies/again.png": ids[0], "zz_third.png": ids[0], "zcopies/other.png": ids[4]}
    assert "3 byte-identical duplicate(s)" in capsys.readouterr().err

    # budget = every distinct image: each picture is picked exactly once
    out = tmp_path / "out"
    res = coldseg.select(root, len(ids), out=out, strategy="ca", features=_features(len(ids), seed=1),
                         report=False, progress=False)
    assert sorted(res.ids) == ids
    assert not set(res.ids) & set(dups)
    man = json.loads((out / "manifest.json").read_text())
    assert {d["id"]: d["same_as"] for d in man["pool"]["duplicates"]} == dups
    # one more than the distinct images is over budget, even though 12 files exist
    with pytest.raises(ValueError, match="exceeds the pool of 9"):
        coldseg.select(root, len(ids) + 1, strategy="random", features=_features(len(ids)), progress=False)


def test_hidden_files_and_folders_are_not_part_of_the_pool(tmp_path, make_pool):
    root = tmp_path / "pool"
    ids = make_pool(root, 3, subfolder=False)
    (root / ".thumbs").mkdir()
    shutil.copy(root / ids[1], root / ".thumbs" / "t.png")
    shutil.copy(root / ids[2], root / "._resource.png")
    assert load_pool(root, S, progress=False).ids == ids


def test_folder_of_only_bad_files_raises_pool_error(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    (root / "a.png").write_bytes(b"\x89PNG not really")
    (root / "b.jpg").write_bytes(b"")
    with pytest.raises(PoolError, match="none of the 2 image files"):
        load_pool(root, S, progress=False)
    (root / "a.png").unlink()
    (root / "b.jpg").unlink()
    (root / "readme.txt").write_text("x")
    with pytest.raises(PoolError, match="no image files"):
        load_pool(root, S, progress=False)
