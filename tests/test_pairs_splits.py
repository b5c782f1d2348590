"""Image/mask pair loading (every validation case) and grouped pool/test splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coldseg.data.pairs import PairError, group_of, load_pairs
from coldseg.data.splits import pool_test_split, subset_size


def _square_mask(side: int = 16, value: int = 255) -> np.ndarray:
    m = np.zeros((side, side), np.uint8)
    m[4:12, 4:12] = value
    return m


def _write(root, ids, *, side=16, mask_value=255, img_ext=".png"):
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in ids:
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}{img_ext}")
        Image.fromarray(_square_mask(side, mask_value)).save(root / "masks" / f"{i}.png")
    return root


# ---------------------------------------------------------------- load_pairs: valid folders

def test_load_pairs_reads_sorted_ids_binary_masks_and_groups(tmp_path):
    ids = ["b_r0c1", "b_r0c0", "a", "Tile1_image_part_002_r3c12"]
    _write(tmp_path, ids)
    ps = load_pairs(tmp_path, size=8, progress=False)
    assert ps.ids == sorted(ids)
    assert ps.images.shape == (4, 3, 8, 8) and ps.images.dtype == np.uint8
    assert ps.masks.shape == (4, 8, 8) and ps.masks.dtype == np.uint8
    assert ps.n_classes == 2
    # NEAREST resize of the 16 px square [4, 12) at half size: exactly [2, 6), values 0/1 only
    expect = np.zeros((8, 8), np.uint8)
    expect[2:6, 2:6] = 1
    assert all(np.array_equal(m, expect) for m in ps.masks)
    assert ps.groups == ["Tile1_image_part_002", "a", "b", "b"]


def test_zero_one_masks_and_jpg_images_are_accepted(tmp_path):
    _write(tmp_path, ["x", "y"], mask_value=1, img_ext=".jpg")
    ps = load_pairs(tmp_path, size=16, progress=False)
    assert set(np.unique(ps.masks).tolist()) == {0, 1}
    assert ps.masks[0, 4:12, 4:12].all() and ps.masks[0].sum() == 64


def test_multiclass_masks_keep_class_ids(tmp_path):
    _write(tmp_path, ["x", "y"])
    m = np.zeros((16, 16), np.uint8)
    m[:8] = 3
    m[8:, :4] = 1
    Image.fromarray(m).save(tmp_path / "masks" / "y.png")
    Image.fromarray((_square_mask() > 0).astype(np.uint8) * 2).save(tmp_path / "masks" / "x.png")
    ps = load_pairs(tmp_path, size=16, multiclass=True, progress=False)
    assert ps.n_classes == 4
    assert np.array_equal(ps.masks[1], m)
    assert set(np.unique(ps.masks[0]).tolist()) == {0, 2}


def test_group_of():
    assert group_of("Tile7_image_part_009_r2c15") == "Tile7_image_part_009"
    assert group_of("10078735_15_r0c4") == "10078735_15"
    assert group_of("train_ISIC_0000000") == "train_ISIC_0000000"
    assert group_of("photo_r1") == "photo_r1"          # no column: not a tile id


# ---------------------------------------------------------------- load_pairs: every error case

def test_missing_images_folder(tmp_path):
    (tmp_path / "masks").mkdir()
    with pytest.raises(PairError, match=r"images folder .*not found"):
        load_pairs(tmp_path, progress=False)


def test_missing_masks_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(PairError, match=r"masks folder .*not found"):
        load_pairs(tmp_path, progress=False)


def test_image_without_mask_is_named(tmp_path):
    _write(tmp_path, ["a", "b", "c"])
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(PairError, match=r"1 image\(s\) .* have no mask .*: b; add the masks"):
        load_pairs(tmp_path, progress=False)


def test_mask_without_image_is_named(tmp_path):
    _write(tmp_path, ["a", "b"])
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(PairError, match=r"1 mask\(s\) .* have no image: a; add the images"):
        load_pairs(tmp_path, progress=False)


def test_unmatched_listing_stops_at_ten(tmp_path):
    _write(tmp_path, [f"m{k:02d}" for k in range(12)])
    for k in range(12):
        (tmp_path / "masks" / f"m{k:02d}.png").unlink()
    with pytest.raises(PairError) as e:
        load_pairs(tmp_path, progress=False)
    assert "12 image(s)" in str(e.value) and "m09" in str(e.value)
    assert "m10" not in str(e.value) and "and 2 more" in str(e.value)


def test_mask_size_differs_from_image(tmp_path):
    _write(tmp_path, ["a", "b"])
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(tmp_path / "masks" / "b.png")
    with pytest.raises(PairError, match=r"mask b.png is 20x16 but image b.png is 16x16"):
        load_pairs(tmp_path, progress=False)


def test_non_binary_mask_needs_multiclass(tmp_path):
    _write(tmp_path, ["a", "b"])
    m = _square_mask()
    m[0, 0] = 128
    Image.fromarray(m).save(tmp_path / "masks" / "a.png")
    with pytest.raises(PairError, match=r"1 mask\(s\) are not binary: a \(values 0, 128, 255\)"
                                        r".*multiclass=True"):
        load_pairs(tmp_path, progress=False)


def test_unreadable_image_and_mask_are_named(tmp_path):
    _write(tmp_path, ["a", "b", "c"])
    (tmp_path / "images" / "b.png").write_bytes(b"not a png at all")
    (tmp_path / "masks" / "c.png").write_bytes(b"")
    with pytest.raises(PairError) as e:
        load_pairs(tmp_path, progress=False)
    msg = str(e.value)
    assert "2 pair(s)" in msg and "unreadable image b.png" in msg and "unreadable mask c.png" in msg
    assert "fix or remove those files" in msg


def test_colour_mask_is_rejected(tmp_path):
    _write(tmp_path, ["a"])
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "masks" / "a.png")
    with pytest.raises(PairError, match="colour image"):
        load_pairs(tmp_path, progress=False)


# ---------------------------------------------------------------- splits

def test_singleton_groups_give_a_plain_seeded_random_split():
    n = 50
    pool, test = pool_test_split(n, None, test_fraction=0.2, seed=7)
    expect = np.sort(np.random.default_rng(7).permutation(n)[:10])
    assert np.array_equal(test, expect)
    assert np.array_equal(np.sort(np.concatenate([pool, test])), np.arange(n))
    ids = [f"img{k}" for k in range(n)]
    p2, t2 = pool_test_split(ids, ids, test_fraction=0.2, seed=7)   # own-group names: same split
    assert np.array_equal(t2, test) and np.array_equal(p2, pool)


@pytest.mark.filterwarnings("ignore:grouped split gives")
def test_grouped_split_keeps_groups_together_and_is_deterministic():
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3, 3, 2]
    groups = [f"src{g}" for g, s in enumerate(sizes) for _ in range(s)]
    n = len(groups)
    for seed in range(20):
        pool, test = pool_test_split(groups, groups, test_fraction=0.25, seed=seed)
        again = pool_test_split(groups, groups, test_fraction=0.25, seed=seed)
        assert np.array_equal(test, again[1]) and np.array_equal(pool, again[0])
        assert len(np.intersect1d(pool, test)) == 0 and len(pool) + len(test) == n
        test_groups = {groups[i] for i in test}
        assert test_groups.isdisjoint({groups[i] for i in pool})
        assert abs(len(test) - round(0.25 * n)) <= max(sizes) // 2
    splits = {tuple(pool_test_split(groups, groups, seed=s)[1]) for s in range(10)}
    assert len(splits) > 1


def test_split_rejects_bad_input():
    with pytest.raises(ValueError, match="test_fraction=1.0"):
        pool_test_split(10, test_fraction=1.0)
    with pytest.raises(ValueError, match="one group"):
        pool_test_split(4, ["g"] * 4)
    with pytest.raises(ValueError, match="3 group names for 4 items"):
        pool_test_split(4, ["a", "b", "c"])


@pytest.mark.parametrize("ratio,n,expect", [(5, 1720, 86), (10, 1720, 172), (20, 1720, 344),
                                            (2.5, 1720, 43), (12.5, 100, 13), (0.01, 50, 1),
                                            (100, 7, 7), (30, 98, 29), (50, 3, 2)])
def test_subset_size(ratio, n, expect):
    assert subset_size(ratio, n) == expect


def test_subset_size_rejects_bad_ratio():
    with pytest.raises(ValueError, match="ratio_percent=0"):
        subset_size(0, 10)
    with pytest.raises(ValueError, match="ratio_percent=150"):
        subset_size(150, 10)


# ---------------------------------------------------------------- real data (skipped when absent)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _real(name: str) -> Path:
    if not (DATA / name).is_dir():
        pytest.skip(f"../shared/data/{name} not found")
    return DATA / name


def test_real_chest_xray_pairs_load_as_binary():
    ps = load_pairs(_real("chest_xray_lungs"), size=32, progress=False)
    assert len(ps) == 98 and ps.images.shape == (98, 3, 32, 32) and ps.n_classes == 2
    assert set(np.unique(ps.masks).tolist()) == {0, 1} and ps.groups == ps.ids


def test_real_aerial_tiles_group_by_source_image_and_load_multiclass():
    root = _real("dubai_aerial")
    ps = load_pairs(root, size=16, multiclass=True, masks_dir="masks_multiclass", progress=False)
    assert len(ps) == 1298 and ps.n_classes == 7 and len(set(ps.groups)) == 72
    pool, test = pool_test_split(ps.ids, ps.groups, test_fraction=0.2, seed=0)
    assert {ps.groups[i] for i in pool}.isdisjoint({ps.groups[i] for i in test})
