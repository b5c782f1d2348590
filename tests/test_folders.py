"""Folders as they come: links and loops, permissions, odd file names, hidden files, EXIF rotation, tiny
and huge images, multi-frame files, CMYK and transparent palettes, and ids written safely into every
output (CSV, JSON, Label Studio, one-per-line text). Small synthetic images only; no training: the
selections use given features. Every case is listed in docs/reliability.md."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import urllib.parse
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import coldseg
from _checksum import unchanged
from coldseg.data.pool import PoolError, load_pool

S = 32  # working size: images saved at S x S are compared pixel for pixel (no resize)


def png_bytes(arr: np.ndarray, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **save)
    return buf.getvalue()


def write_images(root: Path, names: list[str], seed: int = 0) -> list[str]:
    """Distinct random S x S RGB PNGs at ``root/name``; returns the names sorted (the expected ids)."""
    rng = np.random.default_rng(seed)
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(png_bytes(rng.integers(0, 256, (S, S, 3), dtype=np.uint8)))
    return sorted(names)


def assert_ids_stay_inside(pool) -> None:
    """Every id is a relative posix path with no '..' part, naming a path lexically inside the folder."""
    root = os.path.abspath(pool.root)
    for i in pool.ids:
        assert not i.startswith("/") and ".." not in i.split("/"), i
        assert os.path.normpath(os.path.join(root, i)).startswith(root + os.sep), i


def features_for(pool, d: int = 4) -> np.ndarray:
    return np.random.default_rng(len(pool)).normal(size=(len(pool), d))


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


# --------------------------------------------------------------------------------------------------
# links, loops and permissions
# --------------------------------------------------------------------------------------------------
def test_symlink_loops_do_not_hang_and_are_reported(tmp_path):
    root = tmp_path / "pool"
    ids = write_images(root, ["a.png", "sub/b.png"])
    (root / "loop").symlink_to(".", target_is_directory=True)        # pool/loop -> pool
    (root / "sub" / "up").symlink_to("..", target_is_directory=True)  # pool/sub/up -> pool
    (root / "self.png").symlink_to("self.png")                       # a link to itself
    (root / "ping.png").symlink_to("pong.png")                       # two links to each other
    (root / "pong.png").symlink_to("ping.png")
    (root / "gone.png").symlink_to("nowhere.png")                    # dangling
    with pytest.warns(UserWarning, match=r"2 symbolic link\(s\) to folders not followed .*: loop, sub/up"):
        pool = load_pool(root, S, progress=False)
    assert pool.ids == ids
    assert pool.unfollowed == ["loop", "sub/up"]
    reasons = {s["id"]: s["reason"] for s in pool.skipped}
    assert set(reasons) == {"self.png", "ping.png", "pong.png", "gone.png"}
    assert "Too many levels of symbolic links" in reasons["self.png"]
    assert "Too many levels of symbolic links" in reasons["ping.png"]
    assert reasons["gone.png"].startswith("FileNotFoundError")
    assert_ids_stay_inside(pool)


def test_symlinked_file_outside_the_folder_is_read_under_its_own_id(tmp_path):
    outside = tmp_path / "elsewhere"
    write_images(outside, ["secret.png"], seed=1)
    root = tmp_path / "pool"
    ids = write_images(root, ["a.png", "b.png"])
    (root / "link.png").symlink_to(Path("..") / "elsewhere" / "secret.png")  # a relative link going up
    pool = load_pool(root, S, progress=False)
    assert pool.ids == sorted(ids + ["link.png"])
    assert_ids_stay_inside(pool)
    expected = np.asarray(Image.open(outside / "secret.png")).transpose(2, 0, 1)
    assert np.array_equal(pool.images[pool.ids.index("link.png")], expected)

    out = tmp_path / "out"
    res = coldseg.select(root, 3, out=out, strategy="random", features=features_for(pool), report=False,
                         progress=False)
    _, rows = read_csv(out / "selection.csv")
    by_id = {r[1]: r[2] for r in rows}
    assert set(by_id) == set(res.ids) == set(pool.ids)
    assert by_id["link.png"] == str((outside / "secret.png").resolve())  # the file a viewer opens
    tasks = json.loads((out / "labelstudio.json").read_text("utf-8"))
    assert sorted(t["data"]["coldseg_id"] for t in tasks) == pool.ids


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores file permissions")
def test_unreadable_file_and_folder_real_permissions(tmp_path):
    root = tmp_path / "pool"
    ids = write_images(root, ["a.png", "locked.png", "shut/b.png"])
    (root / "locked.png").chmod(0)
    (root / "shut").chmod(0)
    try:
        pool = load_pool(root, S, progress=False)
    finally:
        (root / "locked.png").chmod(0o644)
        (root / "shut").chmod(0o755)
    assert pool.ids == ["a.png"] and ids
    reasons = {s["id"]: s["reason"] for s in pool.skipped}
    assert reasons["locked.png"].startswith("PermissionError")
    assert reasons["shut/"].startswith("folder cannot be listed: PermissionError")


def test_unreadable_file_is_skipped_with_its_reason(tmp_path, monkeypatch, capsys):
    """The same as the real-permission test, by simulation, so that it also runs as root."""
    root = tmp_path / "pool"
    write_images(root, ["a.png", "b.png", "locked.png"])
    real = Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.png":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    pool = load_pool(root, S, progress=False)
    assert pool.ids == ["a.png", "b.png"]
    assert pool.skipped == [{"id": "locked.png", "reason": f"PermissionError: [Errno 13] Permission denied: "
                                                          f"'{root / 'locked.png'}'"}]
    assert "skipped unreadable locked.png: PermissionError" in capsys.readouterr().err


def test_unlistable_folder_is_skipped_with_its_reason(tmp_path, monkeypatch, capsys):
    """A folder os.scandir refuses (permissions, simulated so that it runs as root) is reported."""
    root = tmp_path / "pool"
    write_images(root, ["a.png", "shut/b.png", "shut/c.png"])
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(root / "shut"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    pool = load_pool(root, S, progress=False)
    assert pool.ids == ["a.png"]
    assert pool.skipped == [{"id": "shut/", "reason": "folder cannot be listed: PermissionError: Permission denied"}]
    assert "skipped 'shut/': folder cannot be listed" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# file names
# --------------------------------------------------------------------------------------------------
ODD_NAMES = [
    "with space.png", "two  spaces .png", "comma,name.png", 'quote"d.png', "it's.png", "semi;colon.png",
    "ünïcødé 图像.png", "100% #1 ?.png", "-leading-dash.png", "back\\slash.png", "amp&eq=+.png",
    "emoji \U0001fa7b.png", "my folder/inner, file \"x\".png", "NFC-é.png", "NFD-e\u0301.png",
]


def test_odd_but_valid_names_are_written_safely_everywhere(tmp_path):
    root = tmp_path / "pool"
    ids = write_images(root, ODD_NAMES)
    pool = load_pool(root, S, progress=False)
    assert pool.ids == ids and pool.skipped == []
    assert_ids_stay_inside(pool)
    out = tmp_path / "out"
    with unchanged(root):
        res = coldseg.select(root, len(ids), out=out, strategy="kcenter", features=features_for(pool),
                             report=False, progress=False)
    assert sorted(res.ids) == ids

    # every text output is strict UTF-8
    for f in out.iterdir():
        if f.suffix in (".csv", ".json", ".txt"):
            f.read_bytes().decode("utf-8")
    header, rows = read_csv(out / "selection.csv")  # commas, quotes, newlines-free: the csv module quotes
    assert header[:3] == ["rank", "id", "path"]
    assert [r[1] for r in rows] == res.ids
    assert [r[2] for r in rows] == [str((root / i).resolve()) for i in res.ids]
    assert (out / "selected.txt").read_text("utf-8").splitlines() == [r[2] for r in rows]
    assert (out / "feature_ids.txt").read_text("utf-8").splitlines() == pool.ids
    man = json.loads((out / "manifest.json").read_text("utf-8"))
    assert man["pool"]["size"] == len(ids)

    tasks = json.loads((out / "labelstudio.json").read_text("utf-8"))
    assert [t["data"]["coldseg_id"] for t in tasks] == res.ids
    for t, i in zip(tasks, res.ids):
        url = t["data"]["image"]
        prefix, _, q = url.partition("?d=")
        assert prefix == "/data/local-files/"
        assert re.fullmatch(r"[A-Za-z0-9_.~/%-]*", q), url  # only unreserved characters and %XX
        assert urllib.parse.unquote(q) == str((root / i).resolve()).lstrip("/")

    # the features written beside the picks read back under the same odd ids (the one-per-line file)
    again = coldseg.select(root, 4, strategy="kcenter", features=out / "features.npy", progress=False)
    assert again.ids == res.ids[:4]


def test_label_studio_url_prefix_quotes_the_id(tmp_path):
    root = tmp_path / "pool"
    ids = write_images(root, ["a b,c.png", 'q"#?%.png', "sub dir/é.png"])
    out = tmp_path / "out"
    res = coldseg.select(root, 3, out=out, strategy="random", features=np.eye(3), report=False, progress=False,
                         url_prefix="https://host/data/")
    tasks = json.loads((out / "labelstudio.json").read_text("utf-8"))
    for t, i in zip(tasks, res.ids):
        url = t["data"]["image"]
        assert url.startswith("https://host/data/")
        rest = url[len("https://host/data/"):]
        assert re.fullmatch(r"[A-Za-z0-9_.~/%-]*", rest), url
        assert urllib.parse.unquote(rest) == i
    assert sorted(res.ids) == ids


@pytest.mark.parametrize("prefix,expected", [
    ("https://host/data", "https://host/data/"),            # no trailing slash: one is put in
    ("https://host/data/", "https://host/data/"),
    ("/data/local-files/?d=", "/data/local-files/?d="),     # Label Studio's local-files prefix ends with '='
    ("https://host/get?", "https://host/get?"),
])
def test_label_studio_url_prefix_is_joined_to_the_id_with_one_slash(tmp_path, prefix, expected):
    root = tmp_path / "pool"
    write_images(root, ["rgba.png", "sub/b c.png"])
    out = tmp_path / "out"
    res = coldseg.select(root, 2, out=out, strategy="random", features=np.eye(2), report=False, progress=False,
                         url_prefix=prefix)
    tasks = json.loads((out / "labelstudio.json").read_text("utf-8"))
    assert [t["data"]["image"] for t in tasks] == [expected + urllib.parse.quote(i) for i in res.ids]


def test_image_formats_that_are_not_read_are_named_in_one_warning(tmp_path, capsys):
    root = tmp_path / "pool"
    ids = write_images(root, ["a.png", "b.png"])
    for name in ("scan1.dcm", "sub/scan2.DCM", "x.dicom", "photo.webp", "tile.jp2", "brain.nii.gz", "brain2.nii"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"not read")
    (root / "notes.txt").write_text("other files stay silent")
    with pytest.warns(UserWarning) as rec:
        pool = load_pool(root, S, progress=False)
    msgs = [str(w.message) for w in rec if "formats coldseg does not read" in str(w.message)]
    assert len(msgs) == 1, [str(w.message) for w in rec]
    assert msgs[0].startswith("left out 7 image file(s)")
    assert all(part in msgs[0] for part in ("2 .dcm", "1 .dicom", "1 .webp", "1 .jp2", "1 .nii", "1 .nii.gz",
                                            "convert them to PNG or TIFF"))
    assert pool.ids == ids and pool.ignored == 8
    # other non-image files alone: no warning, as before
    (tmp_path / "plain").mkdir()
    write_images(tmp_path / "plain", ["a.png"])
    (tmp_path / "plain" / "notes.txt").write_text("x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_pool(tmp_path / "plain", S, progress=False).ignored == 1


def test_dataset_root_with_images_and_masks_folders_is_refused(tmp_path):
    ds = tmp_path / "ds"
    write_images(ds / "images", ["a.png", "b.png", "c.png"])
    write_images(ds / "masks", ["a.png", "b.png", "c.png"], seed=1)
    with pytest.raises(PoolError, match=r"holds an 'images' and a 'masks' folder.*pass '.*ds/images' as IMAGES_DIR"):
        load_pool(ds, S, progress=False)
    with pytest.raises(PoolError, match="'masks' folder"):
        coldseg.select(ds, 2, out=tmp_path / "out", strategy="random", features=np.eye(6), progress=False)
    assert not (tmp_path / "out").exists()
    assert load_pool(ds / "images", S, progress=False).ids == ["a.png", "b.png", "c.png"]
    # one of the two alone is an ordinary subfolder of the pool
    (ds / "masks").rename(ds / "labels")
    assert len(load_pool(ds, S, progress=False)) == 6


def _make_raw(path: bytes, data: bytes) -> None:
    try:
        with open(path, "wb") as f:
            f.write(data)
    except (OSError, ValueError) as e:
        pytest.skip(f"this file system refuses the name {path!r}: {e}")


def test_non_utf8_file_name_is_skipped_with_a_rename_hint(tmp_path, capsys):
    root = tmp_path / "pool"
    ids = write_images(root, ["a.png", "b.png"])
    _make_raw(os.fsencode(root) + b"/caf\xe9.png", png_bytes(np.zeros((S, S, 3), np.uint8)))  # Latin-1 é
    pool = load_pool(root, S, progress=False)
    assert pool.ids == ids
    (skip,) = pool.skipped
    assert skip["id"] == "caf\\xe9.png"  # printable: the raw byte shown as \xe9
    assert "not valid UTF-8" in skip["reason"] and "rename" in skip["reason"]
    assert "skipped 'caf\\xe9.png': file name is not valid UTF-8 ('caf\\xe9.png')" in capsys.readouterr().err

    out = tmp_path / "out"
    coldseg.select(root, 2, out=out, strategy="random", features=np.eye(2), report=False, progress=False)
    man = json.loads((out / "manifest.json").read_bytes().decode("utf-8"))  # strict UTF-8 despite the name
    assert man["pool"]["skipped"] == [skip]


def test_images_folder_whose_own_path_is_not_utf8_is_refused_before_any_work(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9 pool"
    try:
        os.mkdir(raw)
    except (OSError, ValueError) as e:
        pytest.skip(f"this file system refuses the name {raw!r}: {e}")
    _make_raw(raw + b"/a.png", png_bytes(np.zeros((S, S, 3), np.uint8)))
    with pytest.raises(PoolError, match=r"caf\\xe9 pool.* is not valid UTF-8 .*rename the folder"):
        load_pool(os.fsdecode(raw), S, progress=False)


@pytest.mark.parametrize("name", ["new\nline.png", "carriage\rreturn.png", "tab\there.png", "bell\x07.png",
                                  "line\u2028separator.png", "del\x7f.png"],
                         ids=["LF", "CR", "TAB", "BEL", "U+2028", "DEL"])
def test_name_with_a_line_break_or_control_character_is_skipped(tmp_path, name):
    root = tmp_path / "pool"
    ids = write_images(root, ["a.png", "b.png"])
    _make_raw(os.fsencode(root / name), png_bytes(np.zeros((S, S, 3), np.uint8)))
    pool = load_pool(root, S, progress=False)
    assert pool.ids == ids
    assert pool.skipped == [{"id": name, "reason": f"file name {name!r} holds a line break or control "
                                                   "character; rename it (ids are written one per line)"}]
    out = tmp_path / "out"
    coldseg.select(root, 2, out=out, strategy="random", features=np.eye(2), report=False, progress=False)
    assert (out / "feature_ids.txt").read_text("utf-8").splitlines() == ids


def test_folder_whose_only_images_have_bad_names_says_why(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    _make_raw(os.fsencode(root / "x\ny.png"), png_bytes(np.zeros((S, S, 3), np.uint8)))
    with pytest.raises(PoolError, match=r"nothing usable in .*1 image file\(s\)/folder\(s\) left out.*line break"):
        load_pool(root, S, progress=False)


def test_hidden_files_and_folders_are_counted_and_said(tmp_path, capsys):
    root = tmp_path / "pool"
    ids = write_images(root, ["a.png", "sub/b.png"])
    write_images(root, [".hidden.png", "._a.png", ".thumbs/t.png", "sub/.cache/c.png"], seed=3)
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    pool = load_pool(root, S, progress=False)
    assert pool.ids == ids
    assert pool.hidden == 5  # .hidden.png, ._a.png, .DS_Store, .thumbs/, sub/.cache/ (not walked into)
    assert pool.skipped == [] and pool.ignored == 0
    assert "left out 5 hidden file(s)/folder(s) (names starting with '.')" in capsys.readouterr().err


def test_files_of_an_earlier_run_inside_the_images_folder_are_not_images(tmp_path, capsys):
    root = tmp_path / "pool"
    ids = write_images(root, ["a.png", "b.png", "c.png", "picks/mine.png"])
    # a coldseg output folder inside the pool: its report figures must never become pool images
    write_images(root, ["picks/map.png", "picks/picks.png"], seed=5)
    (root / "picks" / "manifest.json").write_text(json.dumps(
        {"coldseg": "0.1", "files": ["map.png", "picks.png", "selection.csv", "manifest.json"]}))
    (root / "picks" / "selection.csv").write_text("rank,id\n")
    # a foreign manifest.json is not trusted: its folder's images stay in the pool
    write_images(root, ["other/x.png"], seed=6)
    (root / "other" / "manifest.json").write_text(json.dumps({"files": ["x.png"]}))
    pool = load_pool(root, S, progress=False)
    assert pool.ids == sorted(ids + ["other/x.png"])
    assert pool.outputs == ["picks/manifest.json", "picks/map.png", "picks/picks.png", "picks/selection.csv"]
    assert "left out 4 file(s) written by an earlier coldseg run" in capsys.readouterr().err


def test_out_inside_the_images_folder_is_refused(tmp_path):
    root = tmp_path / "pool"
    write_images(root, [f"img{i}.png" for i in range(6)])
    X = np.random.default_rng(0).normal(size=(6, 3))
    before = sorted(p.name for p in root.rglob("*"))
    for out in (root, root / "picks", root / "a" / "b"):
        with pytest.raises(ValueError, match="lies inside the images folder"):
            coldseg.select(root, 2, out=out, strategy="random", features=X, report=False, progress=False)
    assert sorted(p.name for p in root.rglob("*")) == before   # nothing created in the input
    # a sibling folder whose name starts like the pool's is outside it
    ok = coldseg.select(root, 2, out=tmp_path / "pool-picks", strategy="random", features=X, report=False,
                        progress=False)
    assert len(ok.ids) == 2


# --------------------------------------------------------------------------------------------------
# pixels
# --------------------------------------------------------------------------------------------------
UPRIGHT = np.random.default_rng(7).integers(0, 256, (S, S, 3), dtype=np.uint8)
#: EXIF orientation -> how the file stores the upright picture (a viewer undoes it)
STORED = {
    2: lambda u: u[:, ::-1], 3: lambda u: u[::-1, ::-1], 4: lambda u: u[::-1],
    5: lambda u: u.transpose(1, 0, 2), 6: lambda u: np.rot90(u, 1), 7: lambda u: np.rot90(u, -1)[::-1],
    8: lambda u: np.rot90(u, -1),
}


def _with_orientation(arr: np.ndarray, orientation: int) -> Image.Image:
    im = Image.fromarray(np.ascontiguousarray(arr))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    return im


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_gives_the_upright_pixels(tmp_path, orientation):
    root = tmp_path / "pool"
    root.mkdir()
    stored = STORED[orientation](UPRIGHT)
    assert not np.array_equal(stored, UPRIGHT)
    im = _with_orientation(stored, orientation)
    im.save(root / "photo.png", exif=im.info["exif"])
    pool = load_pool(root, S, progress=False)
    assert np.array_equal(pool.images[0].transpose(1, 2, 0), UPRIGHT)


def test_exif_rotated_jpeg_is_upright(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    smooth = np.zeros((S, S, 3), np.uint8)  # a smooth, asymmetric picture (JPEG keeps it within a few levels)
    smooth[..., 0] = np.linspace(0, 255, S)[None, :]  # red grows to the right
    smooth[..., 1] = np.linspace(0, 255, S)[:, None]  # green grows downwards
    im = _with_orientation(np.rot90(smooth, 1), 6)  # stored rotated; tag 6: turn 90 degrees clockwise
    im.save(root / "phone.jpg", quality=95, exif=im.info["exif"])
    got = load_pool(root, S, progress=False).images[0].transpose(1, 2, 0).astype(int)
    assert np.abs(got - smooth).max() <= 12
    assert np.abs(got - np.rot90(smooth, 1)).max() > 100  # not the stored orientation


def test_one_pixel_and_one_row_images(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    Image.new("RGB", (1, 1), (10, 200, 30)).save(root / "dot.png")
    Image.new("L", (1, 1), 77).save(root / "grey_dot.png")
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(root / "strip.png")  # 2 x 1: one row
    pool = load_pool(root, S, progress=False)
    assert pool.skipped == [] and pool.images.shape == (3, 3, S, S)
    dot = pool.images[pool.ids.index("dot.png")]
    assert (dot.reshape(3, -1).T == [10, 200, 30]).all()
    assert (pool.images[pool.ids.index("grey_dot.png")] == 77).all()
    strip = pool.images[pool.ids.index("strip.png")][0]
    assert strip[:, 0].tolist() == [0] * S and strip[:, -1].tolist() == [255] * S  # left dark, right bright
    assert (np.diff(strip[0].astype(int)) >= 0).all()  # bilinear: a monotone ramp between


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + chunk(b"IEND", b""))


@pytest.fixture
def decoded(monkeypatch) -> list[str]:
    """File names whose pixels Pillow decoded (a spy on ImageFile.load)."""
    names: list[str] = []
    real = ImageFile.ImageFile.load

    def load(self):
        names.append(os.path.basename(getattr(self, "filename", "") or ""))
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return names


def test_decompression_bomb_header_is_refused_without_decoding(tmp_path, decoded):
    root = tmp_path / "pool"
    ids = write_images(root, ["a.png", "b.png"])
    (root / "bomb.png").write_bytes(png_header_only(100_000, 100_000))  # 10^10 pixels, 30 GB as RGB
    filters = list(warnings.filters)
    pool = load_pool(root, S, progress=False)
    assert pool.ids == ids
    (skip,) = pool.skipped
    assert skip["id"] == "bomb.png"
    assert skip["reason"].startswith("DecompressionBombError") and "10000000000 pixels" in skip["reason"]
    assert "bomb.png" not in decoded and "a.png" in decoded  # refused from the header alone
    assert warnings.filters == filters  # the reader restores the warning filters it changed


def test_image_above_the_pixel_limit_is_skipped_naming_its_size(tmp_path, monkeypatch, decoded):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    root = tmp_path / "pool"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, side in (("small.png", 20), ("big.png", 40), ("huge.png", 50)):  # 400, 1600 (< 2x), 2500 px
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = load_pool(root, S, progress=False)
    assert pool.ids == ["small.png"]
    reasons = {s["id"]: s["reason"] for s in pool.skipped}
    assert reasons["big.png"] == ("DecompressionBombError: 40x40 = 1600 pixels exceeds the decompression-bomb "
                                  "limit of 1000 (PIL.Image.MAX_IMAGE_PIXELS); raise that limit if you trust "
                                  "the file")
    assert reasons["huge.png"].startswith("DecompressionBombError") and "2500 pixels" in reasons["huge.png"]
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert "big.png" not in decoded and "huge.png" not in decoded


def test_animated_gif_multipage_tiff_and_apng_give_their_first_frame_with_a_warning(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (S, S), c) for c in colours]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    frames[1].save(root / "pages.tif", save_all=True, append_images=[frames[2], frames[0]])
    frames[2].save(root / "apng.png", save_all=True, append_images=frames[:2])
    Image.new("RGB", (S, S), (9, 9, 9)).save(root / "still.png")
    with pytest.warns(UserWarning, match=r"3 file\(s\) hold several frames or pages; only the first is used: "
                                         r"anim.gif, apng.png, pages.tif"):
        pool = load_pool(root, S, progress=False)
    assert pool.ids == ["anim.gif", "apng.png", "pages.tif", "still.png"]
    assert pool.multi_frame == [{"id": "anim.gif", "frames": 3}, {"id": "apng.png", "frames": 3},
                                {"id": "pages.tif", "frames": 3}]
    first = {"anim.gif": colours[0], "pages.tif": colours[1], "apng.png": colours[2]}
    for i, c in first.items():
        assert (pool.images[pool.ids.index(i)].reshape(3, -1).T == c).all(), i


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    cmyk = np.zeros((S, S, 4), np.uint8)
    h = S // 2
    cmyk[:h, :h, 0] = 255                       # cyan
    cmyk[:h, h:, 1] = 255                       # magenta
    cmyk[h:, :h, 2] = 255                       # yellow
    cmyk[h:, h:, 3] = 255                       # black
    Image.fromarray(cmyk, "CMYK").save(root / "print.jpg", quality=95)
    assert Image.open(root / "print.jpg").mode == "CMYK"
    pool = load_pool(root, S, progress=False)
    img = pool.images[0].astype(int)
    q = S // 4
    for (y, x), rgb in {(q, q): (0, 255, 255), (q, 3 * q): (255, 0, 255), (3 * q, q): (255, 255, 0),
                        (3 * q, 3 * q): (0, 0, 0)}.items():
        assert np.abs(img[:, y, x] - rgb).max() <= 8, (y, x, img[:, y, x])
    assert pool.grayscale is False


def test_palette_png_with_transparency_keeps_the_palette_colours(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    palette = [200, 100, 50, 1, 2, 3, 9, 250, 9] + [0] * (768 - 9)
    idx = np.zeros((S, S), np.uint8)
    idx[:, S // 2:] = 1   # right half: the transparent entry
    idx[0, 0] = 2
    for name, transparency in (("one_index.png", 1), ("alpha_table.png", bytes([255, 0, 128]))):
        p = Image.fromarray(idx, "P")
        p.putpalette(palette)
        p.save(root / name, transparency=transparency)
        assert Image.open(root / name).info["transparency"] == transparency
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow palette-transparency warning either
        pool = load_pool(root, S, progress=False)
    for i in pool.ids:
        img = pool.images[pool.ids.index(i)]
        assert img[:, 0, 0].tolist() == [9, 250, 9]
        assert img[:, 5, 1].tolist() == [200, 100, 50]
        assert img[:, 5, S - 1].tolist() == [1, 2, 3]  # transparent pixels keep their colour, as RGBA does
    assert pool.grayscale is False


def test_grey_with_alpha_is_a_grayscale_image(tmp_path):
    root = tmp_path / "pool"
    root.mkdir()
    la = np.dstack([np.full((S, S), 90, np.uint8), np.full((S, S), 10, np.uint8)])
    Image.fromarray(la, "LA").save(root / "la.png")
    pool = load_pool(root, S, progress=False)
    assert pool.grayscale is True and (pool.images[0] == 90).all()


def test_float64_features_beyond_float32_are_named_not_turned_into_inf(tmp_path):
    from coldseg.features.external import FeaturesError

    root = tmp_path / "pool"
    write_images(root, [f"img{i}.png" for i in range(5)])
    X = np.random.default_rng(0).normal(size=(5, 3))
    X[3, 1] = 1e39                                             # finite in float64, inf in float32
    with pytest.raises(FeaturesError, match=r"float32 range .* 1 row\(s\): 3"):
        coldseg.select(root, 2, strategy="random", features=X, report=False, progress=False)
    np.save(tmp_path / "f.npy", X)
    with pytest.raises(FeaturesError, match=r"f\.npy exceed the float32 range"):
        coldseg.select(root, 2, strategy="random", features=tmp_path / "f.npy", report=False, progress=False)


def test_cli_warnings_are_one_plain_line_and_the_manifest_lists_what_was_left_out(tmp_path):
    import subprocess
    import sys

    root = tmp_path / "pool"
    write_images(root, [f"img{i}.png" for i in range(5)] + [".hidden.png"])
    frames = [Image.fromarray(np.full((S, S, 3), v, np.uint8)) for v in (0, 120, 240)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    np.save(tmp_path / "f.npy", np.random.default_rng(0).normal(size=(6, 3)))
    out = tmp_path / "out"
    # a real process: pytest's own warning capture would hide what a user sees
    proc = subprocess.run([sys.executable, "-m", "coldseg", "select", str(root), "--budget", "2", "--strategy",
                           "random", "--features", str(tmp_path / "f.npy"), "--out", str(out), "--no-report",
                           "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if "several frames" in ln)
    assert line.startswith("coldseg: warning: ") and ".py:" not in proc.stderr
    pool = json.loads((out / "manifest.json").read_text())["pool"]
    assert pool["hidden_left_out"] == 1
    assert pool["multi_frame_first_frame_used"] == [{"id": "anim.gif", "frames": 3}]
