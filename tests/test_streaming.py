"""The decoded-pixels cache (coldseg.data.decoded) and streamed (coldseg.data.stream) training/embedding: the cached pool is
exactly load_pool's, a cache entry is never half-valid, an interrupted decode resumes, and on CPU
streaming from the memmap gives bit-identical weights and features to the in-memory path."""
import dataclasses
import json
import pickle
import shutil

import numpy as np
import pytest
import torch

import coldseg
import coldseg.data.decoded as decoded
from coldseg.data.decoded import HEADER_BYTES, load_pool_cached
from coldseg.data.pool import load_pool
from coldseg.data.stream import LoaderConfig, PixelSource, PoolRows
from coldseg.features.embed import compute_features, embed_images
from coldseg.features.train import train_moco

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest

S = 32
POOL_FIELDS = ("ids", "digests", "grayscale", "skipped", "duplicates", "ignored", "hidden", "unfollowed",
               "multi_frame", "outputs")


@pytest.fixture
def messy_pool(tmp_path, make_pool):
    """20 good images, a broken file, an empty file, a copy of a good image, a copy of the broken one."""
    root = tmp_path / "messy"
    ids = make_pool(root, 20)
    (root / "broken.png").write_bytes(b"not an image at all")
    (root / "empty.jpg").write_bytes(b"")
    shutil.copy(root / ids[3], root / "zz_dup.png")
    shutil.copy(root / "broken.png", root / "zz_broken_copy.png")
    (root / "notes.txt").write_text("not an image")
    return root


def _entries(cache):
    return sorted((cache / "decoded").iterdir())


def test_cached_pool_equals_load_pool(messy_pool, tmp_path, capsys):
    ref = load_pool(messy_pool, S, progress=False)
    ref_err = capsys.readouterr().err
    pool = load_pool_cached(messy_pool, S, cache_dir=tmp_path / "c", progress=False)
    err = capsys.readouterr().err
    for f in POOL_FIELDS:
        assert getattr(pool, f) == getattr(ref, f), f
    assert isinstance(pool.images, np.memmap) and not pool.images.flags.writeable
    assert np.array_equal(pool.images, ref.images) and pool.images.shape == (20, 3, S, S)
    assert sorted(err.splitlines()) == sorted(ref_err.splitlines())  # the same messages
    assert [s["id"] for s in pool.skipped] == ["broken.png", "empty.jpg", "zz_broken_copy.png"]
    # the decode started with 21 candidate rows (the copies never decode); the header was rewritten
    (entry,) = _entries(tmp_path / "c")
    assert (entry / "images.npy").stat().st_size == HEADER_BYTES + 20 * 3 * S * S
    assert sorted(p.name for p in entry.iterdir()) == [".lock", "images.npy", "pool.json"]


def test_second_call_reads_the_cache_without_decoding(messy_pool, tmp_path, monkeypatch, capsys):
    first = load_pool_cached(messy_pool, S, cache_dir=tmp_path / "c", progress=False)
    first_err = capsys.readouterr().err

    def no_decoding(args):
        raise AssertionError(f"decoded {args[1]} again")

    monkeypatch.setattr(decoded, "read_one", no_decoding)
    again = load_pool_cached(messy_pool, S, cache_dir=tmp_path / "c", progress=False)
    assert capsys.readouterr().err == first_err  # skipped files are still reported
    for f in POOL_FIELDS:
        assert getattr(again, f) == getattr(first, f), f
    assert np.array_equal(again.images, first.images)


def test_changed_file_or_size_gives_a_new_entry(tmp_path, make_pool):
    root = tmp_path / "p"
    ids = make_pool(root, 6)
    a = load_pool_cached(root, S, cache_dir=tmp_path / "c", progress=False)
    b = load_pool_cached(root, 16, cache_dir=tmp_path / "c", progress=False)
    assert b.images.shape == (6, 3, 16, 16) and len(_entries(tmp_path / "c")) == 2
    shutil.copy(root / ids[1], root / ids[0])  # now a duplicate of ids[1]... under the first id
    c = load_pool_cached(root, S, cache_dir=tmp_path / "c", progress=False)
    assert len(_entries(tmp_path / "c")) == 3
    assert c.ids == ids[:1] + ids[2:] and c.duplicates == [{"id": ids[1], "same_as": ids[0]}]
    assert np.array_equal(c.images[0], a.images[1])


def test_interrupted_decode_is_never_used_and_resumes(tmp_path, make_pool, monkeypatch):
    root = tmp_path / "p"
    make_pool(root, 11)
    monkeypatch.setattr(decoded, "CHUNK", 4)
    real, calls = decoded.read_one, []

    def dies_at_the_ninth(args):
        calls.append(args[1])
        if len(calls) == 9:
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(decoded, "read_one", dies_at_the_ninth)
    with pytest.raises(KeyboardInterrupt):
        load_pool_cached(root, S, cache_dir=tmp_path / "c", workers=1, progress=False)
    (entry,) = _entries(tmp_path / "c")
    assert not (entry / "pool.json").exists() and not (entry / "images.npy").exists()
    assert json.loads((entry / "progress.json").read_text())["done"] == 8  # two chunks of 4 finished

    calls.clear()
    monkeypatch.setattr(decoded, "read_one", lambda args: (calls.append(args[1]), real(args))[1])
    pool = load_pool_cached(root, S, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert len(calls) == 3  # only the images after the last finished chunk
    ref = load_pool(root, S, progress=False)
    assert pool.ids == ref.ids and np.array_equal(pool.images, ref.images)
    assert not (entry / "progress.json").exists() and not (entry / "images.npy.partial").exists()


def test_pool_rows_read_any_index_order(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (9, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    idx = np.array([5, 1, 2, 3, 0, 5, 8])
    for rows in (PoolRows(mm), pickle.loads(pickle.dumps(PoolRows(mm))), PoolRows(a), PoolRows(mm[2:])):
        base = a if rows.shape[0] == 9 else a[2:]
        got = rows[idx[idx < rows.shape[0]]]
        assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), base[idx[idx < rows.shape[0]]])
    assert PoolRows(mm).file is not None and PoolRows(mm[2:]).file is None  # a slice is indexed
    assert len(pickle.dumps(PoolRows(mm))) < 1000  # workers get a path, not the pixels


def test_pixel_source_chooses_stream_or_memory(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (10, 3, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    cpu = torch.device("cpu")
    assert PixelSource(mm, cpu).streamed and not PixelSource(a, cpu).streamed
    forced = PixelSource(mm, cpu, LoaderConfig(stream=False))
    assert not forced.streamed and torch.equal(forced.images, torch.from_numpy(a))
    idx = [torch.tensor([3, 1]), torch.tensor([9, 0, 0])]
    for src in (PixelSource(mm, cpu), forced, PixelSource(a, cpu), PixelSource(torch.from_numpy(a), cpu)):
        got = list(src.batches(idx))
        assert [g.tolist() for g in got] == [a[[3, 1]].tolist(), a[[9, 0, 0]].tolist()]


def test_streamed_training_and_embedding_are_bit_identical(pool_dir, tiny_moco, tmp_path):
    pool = load_pool_cached(pool_dir, S, cache_dir=tmp_path / "c", progress=False)
    mm = pool.images
    ram = np.array(mm[:16])
    np.save(tmp_path / "16.npy", ram)
    mm16 = np.load(tmp_path / "16.npy", mmap_mode="r")
    cfg = dataclasses.replace(tiny_moco, epochs=2, select_at=0.5)  # eq. 7 scoring streams too
    a, log_a = train_moco(ram, cfg, seed=7, progress=False)
    b, log_b = train_moco(mm16, cfg, seed=7, progress=False)   # a file-backed memmap: streamed
    assert log_a["loss"] == log_b["loss"] and log_a["augmentation"] == log_b["augmentation"]
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    ref = embed_images(a, np.array(mm), batch=7)  # 4 batches (the last of 3)
    assert np.array_equal(embed_images(a, mm, batch=7), ref)
    assert np.array_equal(embed_images(a, mm, batch=7, loader=LoaderConfig(workers=2)), ref)


def test_select_reads_the_pool_through_the_decoded_cache(pool_dir, tmp_path, tiny_moco):
    cfg = dataclasses.replace(tiny_moco, epochs=1, candidates="none")
    res = coldseg.select(pool_dir, 4, out=tmp_path / "out", moco=cfg, cache_dir=tmp_path / "c", report=False,
                         progress=False)
    assert isinstance(res.pool.images, np.memmap) and len(_entries(tmp_path / "c")) == 1
    ref = load_pool(pool_dir, S, progress=False)
    X, _ = compute_features(ref.images, seed=0, settings=cfg, content_key=ref.content_key(), use_cache=False,
                            grayscale=ref.grayscale, progress=False)
    assert np.array_equal(res.features, X)
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["distributed"] == {"world_size": 1, "backend": None}
