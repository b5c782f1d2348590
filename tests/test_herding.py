"""Kernel herding (greedy MMD): picks distributed like the pool, deterministic, O(n) memory paths."""
from __future__ import annotations

import numpy as np
import pytest

from coldseg.select.herding import gaussian_kernel, mean_kernel, median_bandwidth, mmd2, unit_rows
from coldseg.select.registry import get_selector


def _blobs(sizes, d=8, seed=0, spread=0.05):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), d)) * 3
    X = np.concatenate([c + spread * rng.normal(size=(m, d)) for c, m in zip(centres, sizes)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return X.astype(np.float32), labels


def _mmd(X, picks):
    Z = unit_rows(X.astype(np.float64))
    h = median_bandwidth(Z, np.random.default_rng(0))
    return mmd2(Z, picks, h, mean_kernel(Z, Z, h))


def test_mean_kernel_matches_the_dense_formula():
    X = np.random.default_rng(1).normal(size=(50, 4))
    h = 2.0
    dense = np.exp(-((X[:, None] - X[None]) ** 2).sum(-1) / h).mean(1)
    np.testing.assert_allclose(mean_kernel(X, X, h), dense, rtol=1e-10)
    np.testing.assert_allclose(gaussian_kernel(X[:3], X[:3], h).diagonal(), 1.0)


def test_picks_follow_cluster_sizes():
    # 3 well-separated groups of 700/200/100 rows: a 40-pick sample matching the pool holds 28/8/4
    X, labels = _blobs([700, 200, 100])
    sel = get_selector("herding").select(X, 40, random_state=0)
    counts = np.bincount(labels[sel.indices], minlength=3)
    assert counts.tolist() == [28, 8, 4]
    assert len(set(sel.indices.tolist())) == 40


def test_lower_mmd_than_random_draws():
    X, _ = _blobs([300, 150, 50, 20], d=16, spread=0.6)
    herd = _mmd(X, get_selector("herding").select(X, 25, random_state=0).indices)
    rand = [_mmd(X, get_selector("random").select(X, 25, random_state=s).indices) for s in range(10)]
    assert herd < min(rand)


def test_deterministic_and_seed_free_on_small_pools():
    X, _ = _blobs([120, 60])
    a = get_selector("herding").select(X, 15, random_state=0).indices
    b = get_selector("herding").select(X, 15, random_state=123).indices
    assert a.tolist() == b.tolist()


def test_cells_on_large_pools_stay_close_and_spread_every_prefix():
    X, _ = _blobs([600, 300, 100], d=8, spread=0.5, seed=3)
    exact = get_selector("herding").select(X, 30, random_state=0)
    celled = get_selector("herding", exact_below=100, cell_rows=250, landmarks=400).select(X, 30, random_state=0)
    assert exact.info["mu"] == "exact" and exact.info["cells"] == 1
    assert celled.info["cells"] == 4 and "400 landmarks" in celled.info["mu"]
    assert len(set(celled.indices.tolist())) == 30
    assert _mmd(X, celled.indices) < 2 * _mmd(X, exact.indices) + 1e-4
    rand = [_mmd(X, get_selector("random").select(X, 30, random_state=s).indices) for s in range(10)]
    assert _mmd(X, celled.indices) < np.median(rand)
    # the list is interleaved: every prefix holds each cell's picks in proportion to its quota (± 1.5)
    from coldseg.select.fps import cell_labels
    from coldseg.select.herding import unit_rows
    cells = cell_labels(unit_rows(X), 4)[celled.indices]
    quota = np.bincount(cells, minlength=4)
    assert (quota > 0).sum() >= 3
    for k in range(1, 31):
        assert np.abs(np.bincount(cells[:k], minlength=4) - k * quota / 30).max() <= 1.5


def test_duplicate_rows_and_bad_parameters():
    X = np.ones((10, 3), np.float32)
    sel = get_selector("herding").select(X, 4, random_state=0)
    assert sorted(sel.indices.tolist()) == sorted(set(sel.indices.tolist()))
    assert sel.info["bandwidth"] == 1.0
    with pytest.raises(ValueError, match="landmarks"):
        get_selector("herding", landmarks=0).select(X, 2)
    with pytest.raises(ValueError, match="max_dims"):
        get_selector("herding", max_dims=0).select(X, 2)
    with pytest.raises(ValueError, match="cell_rows"):
        get_selector("herding", cell_rows=0).select(X, 2)


def test_mmd2_in_blocks_matches_the_dense_value(monkeypatch):
    from coldseg.select import herding as H

    Z = unit_rows(np.random.default_rng(2).normal(size=(60, 5)))
    picks = np.arange(0, 60, 3)
    mu = mean_kernel(Z, Z, 0.7)
    dense = mmd2(Z, picks, 0.7, mu)
    monkeypatch.setattr(H, "_CHUNK_ELEMS", 7)                  # blocks of 1 row
    assert mmd2(Z, picks, 0.7, mu) == pytest.approx(dense, rel=1e-12)
    P = Z[picks]
    K = np.exp(-((P[:, None] - P[None]) ** 2).sum(-1) / 0.7)
    assert dense == pytest.approx(K.mean() - 2 * mu[picks].mean() + mu.mean(), rel=1e-9)


def test_wide_features_of_large_pools_are_projected_small_pools_never():
    X, _ = _blobs([300, 200], d=40, spread=0.5, seed=5)
    small = get_selector("herding", max_dims=8).select(X, 10, random_state=0)
    assert "projected_dims" not in small.info
    big = get_selector("herding", exact_below=100, cell_rows=250, max_dims=8).select(X, 10, random_state=0)
    assert big.info["projected_dims"] == 8 and 0 < big.info["projected_variance"] <= 1
    assert len(set(big.indices.tolist())) == 10


@pytest.mark.parametrize("alpha, expected", [(1.0, [28, 8, 4]), (0.5, [22, 10, 8]), (0.0, [15, 11, 14])])
def test_alpha_flattens_the_target_toward_an_even_spread(alpha, expected):
    # groups of 700/200/100: q ~ p^alpha gives them masses ~ size^alpha, so 40 picks go
    # 28/8/4 (the pool), about 21/11/8 (square roots) and about 13 each (alpha = 0)
    X, labels = _blobs([700, 200, 100])
    exact = get_selector("herding", alpha=alpha).select(X, 40, random_state=0)
    assert np.bincount(labels[exact.indices], minlength=3).tolist() == expected
    assert exact.info["alpha"] == alpha
    assert exact.info["density_range"] > 5                        # 700 vs 100 rows: a wide density range
    celled = get_selector("herding", alpha=alpha, exact_below=100, cell_rows=250, landmarks=400).select(X, 40, random_state=0)
    counts = np.bincount(labels[celled.indices], minlength=3)
    assert len(set(celled.indices.tolist())) == 40
    assert np.abs(counts - np.array(expected)).max() <= 1


def test_alpha_one_is_the_plain_herding_and_bad_alpha_fails():
    X, _ = _blobs([120, 60, 20], spread=0.4)
    plain = get_selector("herding").select(X, 12, random_state=0)
    one = get_selector("herding", alpha=1.0).select(X, 12, random_state=0)
    assert plain.indices.tolist() == one.indices.tolist()
    for bad in (-0.5, float("nan"), "half"):
        with pytest.raises(ValueError, match="alpha"):                 # at construction: before any training
            get_selector("herding", alpha=bad)


def test_tempering_weights_turn_a_density_into_importance_weights():
    from coldseg.select.herding import tempering_weights

    p = np.array([0.4, 0.1, 0.1, 0.4])
    np.testing.assert_allclose(tempering_weights(p, 1.0), 0.25)
    w = tempering_weights(p, 0.0)                                  # 1/p, normalised
    np.testing.assert_allclose(w, np.array([0.1, 0.4, 0.4, 0.1]))
    assert np.isfinite(tempering_weights(np.array([0.0, 1.0]), 0.0)).all()


def test_weighted_split_is_exact_and_respects_group_sizes():
    from coldseg.select.kmedian import weighted_split

    assert weighted_split([3.0, 1.0], [10, 10], 8).tolist() == [6, 2]
    assert weighted_split([3.0, 1.0], [2, 10], 8).tolist() == [2, 6]     # the full group's rest moves on
    assert weighted_split([0.0, 0.0], [3, 5], 4).sum() == 4                # no mass: by room
    rng = np.random.default_rng(0)
    for _ in range(300):
        g = int(rng.integers(1, 8))
        sizes = rng.integers(0, 20, g)
        budget = int(rng.integers(0, sizes.sum() + 1))
        mass = rng.random(g) * (rng.random(g) > 0.3)
        q = weighted_split(mass, sizes, budget)
        assert q.sum() == budget and (q >= 0).all() and (q <= sizes).all()
    with pytest.raises(ValueError, match="budget"):
        weighted_split([1.0], [3], 4)
    with pytest.raises(ValueError, match="mass"):
        weighted_split([-1.0, 2.0], [3, 3], 2)


def test_bandwidth_factor_narrows_the_kernel_and_bad_values_fail():
    X = np.random.default_rng(3).normal(size=(300, 6)).astype(np.float32)
    one = get_selector("herding").select(X, 20, random_state=0)
    same = get_selector("herding", bandwidth=1.0).select(X, 20, random_state=0)
    np.testing.assert_array_equal(one.indices, same.indices)           # 1 is the default, byte for byte
    narrow = get_selector("herding[bandwidth=0.1]").select(X, 20, random_state=0)
    assert narrow.info["bandwidth"] == pytest.approx(0.1 * one.info["bandwidth"])
    assert narrow.info["bandwidth_factor"] == 0.1 and one.info["bandwidth_factor"] == 1.0
    assert len(set(narrow.indices.tolist())) == 20 and not np.array_equal(narrow.indices, one.indices)
    for bad in (0, -1.0, float("nan"), "wide"):
        with pytest.raises(ValueError, match="bandwidth"):           # at construction: before any training
            get_selector("herding", bandwidth=bad)
    with pytest.raises(ValueError, match=r"alpha=-1 must be a number >= 0"):
        get_selector("herding", alpha=-1)
