"""Selection at scale (issue 5): dtype handling, sampled K sweep, stratified silhouette, chunked Lloyd,
cell-pruned FPS and radius graphs, all checked against exact brute force on sizes where it is cheap."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from coldseg.select.base import check_features
from coldseg.select.fps import farthest_point_sampling
from coldseg.select.kmeans import choose_k, kmeans, lloyd, n_distinct_rows
from coldseg.select.neighbors import nearest_other_label, radius_graph
from coldseg.select.registry import get_selector
from coldseg.select.representative import l2_normalise
from coldseg.select.silhouette import SilhouetteSample, silhouette_estimate, silhouette_values

ROOT = Path(__file__).resolve().parents[1]


def blobs(n, d, k, seed=0, spread=3.0, dtype=np.float64):
    """n rows around k centres drawn from N(0, spread^2 I); returns X and the blob of each row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, spread, (k, d))
    truth = rng.integers(0, k, n)
    return (centres[truth] + rng.normal(size=(n, d))).astype(dtype), truth


# ---------------------------------------------------------------- features keep their dtype
def test_check_features_keeps_float32_and_widens_the_rest():
    X32 = np.ones((4, 3), np.float32)
    assert check_features(X32) is X32  # no copy: 10^6 x 128 float32 stays 0.5 GB
    assert check_features(np.ones((4, 3), np.float16)).dtype == np.float32
    assert check_features(np.ones((4, 3), np.int64)).dtype == np.float64
    assert check_features(np.asfortranarray(np.ones((4, 3)))).flags.c_contiguous
    bad = np.zeros((5, 2), np.float32)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"1 row\(s\): 3"):
        check_features(bad)


def test_n_distinct_rows_is_exact_below_the_cap():
    X = np.repeat(np.arange(5.0)[:, None], 2000, axis=0)  # 10 000 rows, 5 distinct
    assert n_distinct_rows(X, 20) == 5
    assert n_distinct_rows(X, 3) == 3
    assert n_distinct_rows(np.random.default_rng(0).normal(size=(50_000, 2)), 20) == 20


# ---------------------------------------------------------------- silhouette
def test_silhouette_values_match_scikit_learn():
    X, _ = blobs(600, 5, 4)
    lab = KMeans(4, n_init=1, random_state=0).fit_predict(X)
    assert silhouette_values(X, lab).mean() == pytest.approx(silhouette_score(X, lab), abs=1e-6)


@pytest.mark.parametrize("spread", [3.0, 0.6])  # separated blobs, and heavily overlapping ones
def test_stratified_silhouette_error_against_exact(spread):
    # n = 4000 (exact is affordable), 1000-row sample, unequal clusters: error below 0.02 for every K
    rng = np.random.default_rng(1)
    centres = rng.normal(0, spread, (8, 32))
    which = rng.choice(8, 4000, p=[0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.03, 0.02])
    X = (centres[which] + rng.normal(size=(4000, 32))).astype(np.float32)
    for k in (2, 5, 10, 20):
        lab = KMeans(k, n_init=1, random_state=0).fit_predict(X)
        exact = silhouette_score(X, lab)
        for seed in range(3):
            est, m = silhouette_estimate(X, lab, 1000, seed=seed)
            assert abs(est - exact) < 0.02, (k, seed, est, exact)
            assert 1000 <= m <= 1000 + 10 * k


def test_silhouette_sample_tops_up_small_clusters():
    X, _ = blobs(3000, 4, 2, seed=2)
    lab = np.zeros(3000, np.int64)
    lab[1500:] = 1
    lab[[7, 8, 9]] = 2  # a 3-row cluster that a 300-row uniform sample would mostly miss
    S = SilhouetteSample(X, 300, seed=0)
    missing = 3 - np.isin([7, 8, 9], S.rows).sum()
    score, m = S.score(lab, seed=1)
    assert m == 300 + missing  # every row of the tiny cluster is scored
    assert S.score(lab, seed=1) == (score, m)  # seeded
    small = SilhouetteSample(X[:200], 300)
    assert small.exact  # small pools: the exact coefficient
    halves = (X[:200, 0] > np.median(X[:200, 0])).astype(np.int64)
    assert small.score(halves)[0] == pytest.approx(silhouette_score(X[:200], halves), abs=1e-6)


# ---------------------------------------------------------------- k-means at scale
def test_lloyd_numpy_and_torch_agree_and_return_means():
    X, truth = blobs(5000, 6, 4, seed=3, dtype=np.float32)
    init = X[[np.flatnonzero(truth == c)[0] for c in range(4)]].astype(np.float64)
    lab_np, C_np, _ = lloyd(X, init, device=None)
    lab_t, C_t, _ = lloyd(X, init, device="cpu")  # the torch path (CUDA when present)
    assert (lab_np == lab_t).all() and (lab_np == truth).all()
    for c in range(4):  # centres are the means of the returned labels
        np.testing.assert_allclose(C_np[c], X[lab_np == c].mean(0, dtype=np.float64), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(C_np, C_t, atol=1e-5)


def test_kmeans_and_choose_k_on_a_sample_then_all_rows():
    X, truth = blobs(30_000, 8, 3, seed=4, spread=6.0, dtype=np.float32)
    lab, C = kmeans(X, 3, seed=0, fit_sample=2000)
    assert C.shape == (3, 8) and len(set(zip(lab.tolist(), truth.tolist()))) == 3  # blobs recovered
    ch = choose_k(X, range(2, 7), seed=0, sample_size=1000, fit_sample=3000)
    assert ch.k == 3 and ch.fit_sample_size == 3000 and ch.sample_size == 1000 and ch.lloyd_iter >= 1
    assert len(set(zip(ch.labels.tolist(), truth.tolist()))) == 3
    again = choose_k(X, range(2, 7), seed=0, sample_size=1000, fit_sample=3000)
    assert again.silhouette == ch.silhouette and (again.labels == ch.labels).all()


def test_ca_on_a_large_pool_is_seeded_and_exact_in_budget():
    X, truth = blobs(12_000, 8, 4, seed=5, spread=6.0, dtype=np.float32)  # above the 10 000-row fit sample
    a = get_selector("ca", k_max=6).select(X, 120, random_state=3)
    b = get_selector("ca", k_max=6).select(X, 120, random_state=3)
    assert a.indices.tolist() == b.indices.tolist() and len(set(a.indices.tolist())) == 120
    assert a.info["k"] == 4 and a.info["kmeans_fit_sample_size"] == 10_000
    assert sorted(np.bincount(truth[a.indices]).tolist()) == [30, 30, 30, 30]  # equal split per blob


# ---------------------------------------------------------------- farthest point sampling
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fps_cells_equal_plain(dtype):
    X, _ = blobs(25_000, 16, 10, seed=6, dtype=dtype)
    plain = farthest_point_sampling(X, 150, method="plain")
    assert farthest_point_sampling(X, 150, method="cells").tolist() == plain.tolist()
    assert farthest_point_sampling(X, 150).tolist() == plain.tolist()  # auto picks cells here
    d0 = np.random.default_rng(0).random(len(X))
    d0[:5] = -1.0  # labelled rows
    with_set = farthest_point_sampling(X, 60, min_dist=d0, method="cells")
    assert with_set.tolist() == farthest_point_sampling(X, 60, min_dist=d0, method="plain").tolist()
    assert not set(with_set.tolist()) & {0, 1, 2, 3, 4}


def test_fps_cells_on_duplicates_takes_rows_in_index_order():
    assert farthest_point_sampling(np.zeros((30_000, 3)), 40, method="cells").tolist() == list(range(40))


# ---------------------------------------------------------------- radius graph and purity distances
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_radius_graph_cells_match_brute_force(dtype):
    X, _ = blobs(21_000, 16, 30, seed=7, spread=6.0)
    Z = l2_normalise(X).astype(dtype)
    A = radius_graph(Z, 0.02, 10**8)  # 21 000 rows: the cell-pruned path
    assert (A != A.T).nnz == 0
    rng = np.random.default_rng(0)
    for i in rng.choice(len(Z), 100, replace=False):
        diff = Z - Z[i]
        truth = set(np.flatnonzero(np.einsum("ij,ij->i", diff, diff) < 0.02).tolist()) | {int(i)}
        assert set(A.indices[A.indptr[i] : A.indptr[i + 1]].tolist()) == truth
    assert A.nnz > 10 * len(Z)  # balls of more than the row itself
    assert radius_graph(Z, 0.02, A.nnz - 1) is None and radius_graph(Z, 0.02, A.nnz).nnz == A.nnz


def test_nearest_other_label_matches_brute_force():
    X, truth = blobs(3000, 6, 5, seed=8)
    Z = l2_normalise(X).astype(np.float32)
    rows = np.arange(0, 3000, 37)
    got = nearest_other_label(Z, truth, rows)
    for r, g in zip(rows, got):
        other = Z[truth != truth[r]] - Z[r]
        assert g == pytest.approx(np.einsum("ij,ij->i", other, other).min(), rel=1e-5)


# ---------------------------------------------------------------- kmedian in cells
def test_kmedian_splits_large_pools_into_cells():
    X, _ = blobs(3000, 4, 6, seed=9)
    sel = get_selector("kmedian", max_rows=1000, cell_rows=500).select(X, 30, random_state=0)
    again = get_selector("kmedian", max_rows=1000, cell_rows=500).select(X, 30, random_state=0)
    assert sel.indices.tolist() == again.indices.tolist() and len(set(sel.indices.tolist())) == 30
    assert sel.info["cells"] == 6 and sum(sel.info["cluster_sizes"]) == 3000
    for i, c in zip(sel.indices, sel.clusters):  # each pick: its cluster's member nearest (L1) the median
        members = np.flatnonzero(sel.labels == c)
        med = np.median(X[members], axis=0)
        assert np.abs(X[i] - med).sum() == pytest.approx(np.abs(X[members] - med).sum(1).min())


# ---------------------------------------------------------------- kmedian on wide, large pools
def test_fit_components_orthonormal_basis_keeps_a_low_rank_pool_exactly():
    from coldseg.select.project import fit_components, project

    rng = np.random.default_rng(3)
    X = (rng.normal(size=(500, 3)) @ rng.normal(size=(3, 12)) + 5.0).astype(np.float32)  # rank 3, offset
    mean, W, kept = fit_components(X, 3)
    assert W.shape == (12, 3) and np.allclose(W.T @ W, np.eye(3), atol=1e-10)
    assert kept == pytest.approx(1.0, abs=1e-6)  # all the variance lies in three directions
    Z = project(X, mean, W)
    assert Z.shape == (500, 3) and Z.dtype == np.float32
    i, j = rng.integers(0, 500, (2, 50))
    assert np.allclose(np.linalg.norm(Z[i] - Z[j], axis=1), np.linalg.norm(X[i] - X[j], axis=1), rtol=1e-4)
    again = fit_components(X, 3)[1]
    assert np.array_equal(W, again)  # fixed sample, fixed signs
    assert np.all(W[np.argmax(np.abs(W), axis=0), np.arange(3)] > 0)
    with pytest.raises(ValueError, match="k=13"):
        fit_components(X, 13)


def test_fit_components_on_a_sample_matches_the_full_fit():
    from coldseg.select.project import fit_components

    X, _ = blobs(4000, 10, 4, seed=2)
    full = fit_components(X, 3)[1]  # 4 blobs span 3 directions; the rest is isotropic noise
    sampled = fit_components(X, 3, sample_rows=2000)[1]
    assert np.abs(np.sum(full * sampled, axis=0)).min() > 0.99  # the same top directions


def test_kmedian_projects_only_large_wide_pools():
    X, _ = blobs(3000, 16, 6, seed=4)
    small = get_selector("kmedian", max_rows=5000, max_dims=4).select(X, 30, random_state=0)
    plain = get_selector("kmedian", max_rows=5000, max_dims=16).select(X, 30, random_state=0)
    assert "projected_dims" not in small.info and small.indices.tolist() == plain.indices.tolist()
    big = get_selector("kmedian", max_rows=1000, cell_rows=500, max_dims=4).select(X, 30, random_state=0)
    assert big.info["projected_dims"] == 4 and 0 < big.info["projected_variance"] <= 1
    assert len(set(big.indices.tolist())) == 30 and np.all(np.isfinite(big.distances))
    narrow = get_selector("kmedian", max_rows=1000, cell_rows=500, max_dims=16).select(X, 30, random_state=0)
    assert "projected_dims" not in narrow.info  # not wider than max_dims: left as it is
    with pytest.raises(ValueError, match="max_dims"):
        get_selector("kmedian", max_dims=0).select(X, 3, random_state=0)


def test_selection_scale_projection_error_scores_picks_in_the_original_space(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "selection_scale.py"), "--projection-error", "--n", "3000",
         "--d", "16", "--max-rows", "1000", "--cell-rows", "500", "--max-dims", "4", "--repeats", "1",
         "--cache", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout.splitlines()
    rows = {r["variant"]: r for r in map(json.loads, out)}
    assert set(rows) == {"exact", "projected", "random"}
    assert rows["projected"]["projected_dims"] == 4 and rows["exact"]["projected_dims"] is None
    for name in ("exact", "projected"):  # both cover the pool better than 30 random rows
        assert rows[name]["mean_l1_to_nearest_pick"] < rows["random"]["mean_l1_to_nearest_pick"]


# ---------------------------------------------------------------- the benchmark script
def test_selection_scale_benchmark_prints_one_json_line_per_measurement(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "selection_scale.py"), "--n", "2000",
         "--selectors", "random,kcenter", "--cache", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout.splitlines()
    rows = [json.loads(line) for line in out]
    assert [r["selector"] for r in rows] == ["random", "kcenter"]
    for r in rows:
        assert (r["n"], r["d"], r["budget"]) == (2000, 128, 20)
        assert r["seconds"] >= 0 and r["peak_rss_mb"] >= r["loaded_rss_mb"] > 0
    assert np.load(next(tmp_path.glob("*.npy"))).dtype == np.float32
