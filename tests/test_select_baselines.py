"""Hand-computed cases for the one-shot baselines: kcenter, kmedian, ra, typiclust, probcover;
and the selector contract (exact budget, unique, in range, seeded) for every registered strategy."""
import json
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from coldseg.select.kcenter import k_center_greedy, pad_by_k_center
from coldseg.select.kmedian import kmedian
from coldseg.select.probcover import greedy_max_coverage, largest_pure_sq_delta, purity, delta_ball_graph
from coldseg.select.registry import available, get_selector
from conftest import pick
from coldseg.select.representative import facility_location_greedy, proportional_split
from coldseg.select.typiclust import mean_knn_distance, typicality

LINE = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])


def axis_blobs(seed=0, n=30, sigma=0.3):
    """Three blobs around 10·e_k in 3-D (separate directions, so they survive L2 normalisation)."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(10 * np.eye(3)[k], sigma, (n, 3)) for k in range(3)])
    return X, np.repeat([0, 1, 2], n)


def grid_blobs(seed=0):
    """Three 5×5 unit grids centred 100 apart, rows shuffled. Returns X and the rows of the 3 centres."""
    g = np.stack(np.meshgrid(np.arange(-2, 3), np.arange(-2, 3)), -1).reshape(-1, 2).astype(float)
    X = np.concatenate([g + c for c in ([0, 0], [100, 0], [0, 100])])  # (75, 2); centre at 12, 37, 62
    perm = np.random.default_rng(seed).permutation(len(X))
    inv = np.argsort(perm)
    return X[perm], inv[[12, 37, 62]]


# ---------------------------------------------------------------- kcenter
def test_kcenter_on_a_line_cold_start():
    # mean 3.2 -> closest row is 3 (idx 3). Farthest from 3: 10 (7) -> idx 4. Then min dists
    # 0->3, 1->2, 2->1 -> idx 0. Then 1 and 2 both at 1 -> tie -> lower index 1, then 2.
    sel = get_selector("kcenter").select(LINE, 4, random_state=0)
    assert sel.indices.tolist() == [3, 4, 0, 1]
    assert (sel.clusters == -1).all()
    np.testing.assert_allclose(sel.distances, np.abs(LINE[[3, 4, 0, 1], 0] - 3.2))
    assert sel.info["first_pick"] == 3
    # after {3, 10} the farthest row is 0 at distance 3: the covering radius of a 2-pick set
    assert get_selector("kcenter").select(LINE, 2).info["covering_radius"] == pytest.approx(3.0)
    far = get_selector("kcenter", start="farthest_from_mean").select(LINE, 4)
    assert far.indices.tolist() == [4, 0, 3, 1]  # the FPS convention of ca.py


def test_k_center_greedy_with_and_without_labelled_rows():
    assert k_center_greedy(LINE, 5).tolist() == [3, 4, 0, 1, 2]
    assert k_center_greedy(LINE, 2, labeled=[]).tolist() == [3, 4]
    assert k_center_greedy(LINE, 2, labeled=[4]).tolist() == [0, 3]  # from 10: 0 (10), then 3 (3)
    # labelled rows are never re-picked, even when every row is a duplicate
    assert sorted(k_center_greedy(np.zeros((4, 2)), 2, labeled=[0, 1]).tolist()) == [2, 3]
    assert pad_by_k_center(LINE, np.array([3]), 3).tolist() == [3, 4, 0]
    with pytest.raises(ValueError, match="n_samples=5"):
        k_center_greedy(LINE, 5, labeled=[0])


def test_kcenter_rejects_unknown_start():
    with pytest.raises(ValueError, match="start='middle'"):
        get_selector("kcenter", start="middle").select(LINE, 2)


# ---------------------------------------------------------------- kmedian
def test_kmedian_lloyd_hand_computed():
    X = np.array([[0.0], [1.0], [2.0], [100.0], [101.0], [102.0]])
    for seed in range(5):
        labels, dist, C, _, converged = kmedian(X, 2, np.random.default_rng(seed))
        assert converged
        assert sorted(C[:, 0].tolist()) == [1.0, 101.0]  # medians of {0,1,2} and {100,101,102}
        assert labels[0] == labels[2] != labels[3] == labels[5]
        assert dist.tolist() == [1.0, 0.0, 1.0, 1.0, 0.0, 1.0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_kmedian_one_pick_per_blob(seed):
    X, truth = axis_blobs(seed)
    sel = get_selector("kmedian").select(X, 3, random_state=seed)
    assert sorted(truth[sel.indices].tolist()) == [0, 1, 2]
    # each pick is its cluster's member nearest (L1) to the coordinate-wise median
    for i, c in zip(sel.indices, sel.clusters):
        members = np.flatnonzero(sel.labels == c)
        med = np.median(X[members], axis=0)
        assert i == members[np.argmin(np.abs(X[members] - med).sum(1))]
    assert sel.info["n_empty_clusters_filled"] == 0


def test_kmedian_fills_empty_clusters_from_the_farthest_rows():
    X = np.array([[0.0], [0.0], [0.0], [5.0]])  # three seeds, two of them duplicates -> one empty cluster
    sel = get_selector("kmedian").select(X, 3, random_state=0)
    assert 3 in sel.indices and len(set(sel.indices.tolist())) == 3
    assert sel.info["n_empty_clusters_filled"] == 1


# ---------------------------------------------------------------- typiclust
def test_typicality_hand_computed():
    Xc = np.array([[0.0], [1.0], [3.0]])
    np.testing.assert_allclose(mean_knn_distance(Xc, 1), [1.0, 1.0, 2.0])
    np.testing.assert_allclose(typicality(Xc, 1), [1.0, 1.0, 0.5])
    np.testing.assert_allclose(mean_knn_distance(Xc, 20), [2.0, 1.5, 2.5])  # k capped at m - 1 = 2
    assert mean_knn_distance(np.ones((1, 2))).tolist() == [np.inf]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_typiclust_picks_each_grid_centre(seed):
    X, centres = grid_blobs(seed)
    sel = get_selector("typiclust").select(X, 3, random_state=seed)
    assert sorted(sel.indices.tolist()) == sorted(centres.tolist())
    np.testing.assert_allclose(sel.distances, 0.0, atol=1e-9)  # the grid centre is the centroid
    assert sel.info["k"] == 3


def test_typiclust_skips_small_clusters_while_it_can():
    X, centres = grid_blobs(0)
    X = np.concatenate([X, [[500.0, 500.0], [501.0, 500.0]]])  # a 2-row outlier cluster (< 5 members)
    sel = get_selector("typiclust").select(X, 4, random_state=0)
    assert set(sel.indices[:3].tolist()) == set(centres.tolist())
    assert sel.indices[3] < 75  # the 4th pick is a second point from a blob, not an outlier
    assert sel.info["picks_from_small_clusters"] == 0


# ---------------------------------------------------------------- probcover
def test_purity_and_delta_rule_hand_computed():
    sq_d = np.array([1.0, 4.0, 9.0, 16.0])  # squared distances to the nearest other pseudo-label
    assert purity(sq_d, 2.0) == 0.75 and purity(sq_d, 2.01) == 0.5
    assert largest_pure_sq_delta(sq_d, 0.75) == 4.0  # largest delta with purity >= 0.75 is 2
    assert largest_pure_sq_delta(sq_d, 1.0) == 1.0
    assert largest_pure_sq_delta(sq_d, 0.5) == 9.0


def test_greedy_max_coverage_hand_computed():
    Z = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [9.0]])
    A = delta_ball_graph(Z, 0.15**2, max_edges=100)  # balls: {0,1}, {0,1,2}, {1,2}, {3,4}, {3,4}, {5}
    assert np.diff(A.indptr).tolist() == [2, 3, 2, 2, 2, 1]
    picks, covered = greedy_max_coverage(A, 6)
    assert picks.tolist() == [1, 3, 5] and covered.all()
    assert delta_ball_graph(Z, 0.15**2, max_edges=5) is None
    R = np.random.default_rng(0).normal(size=(300, 5))
    R = np.concatenate([R, R[:10]]) / np.linalg.norm(np.concatenate([R, R[:10]]), axis=1, keepdims=True)
    G = delta_ball_graph(R, 0.8, max_edges=10**6)
    assert (G != G.T).nnz == 0 and (G.diagonal() == 1).all()  # symmetric; every row covers itself
    D = ((R[:, None] - R[None]) ** 2).sum(-1)
    assert G.nnz == int(((D < 0.8) | np.eye(len(R), dtype=bool)).sum())  # same pairs as brute force


def test_greedy_ties_break_at_random_but_gains_still_come_first():
    Z = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [9.0]])
    A = delta_ball_graph(Z, 0.15**2, max_edges=100)  # degrees 2, 3, 2, 2, 2, 1
    seconds = set()
    for seed in range(20):
        picks, covered = greedy_max_coverage(A, 6, np.random.default_rng(seed))
        assert picks[0] == 1 and picks[2] == 5 and covered.all()   # the unique best ball, the last blob
        seconds.add(int(picks[1]))                                  # {3,4} tie on gain 2
    assert seconds == {3, 4}
    # all balls of one row: every pick is a tie; index order would give 0..99, random ties spread out
    n = 1000
    I = sp.identity(n, format="csr", dtype=np.int8)
    assert greedy_max_coverage(I, 100)[0].tolist() == list(range(100))
    picks = greedy_max_coverage(I, 100, np.random.default_rng(0))[0]
    assert len(set(picks.tolist())) == 100 and 350 < picks.mean() < 650 and (picks < 100).sum() < 25
    assert np.array_equal(picks, greedy_max_coverage(I, 100, np.random.default_rng(0))[0])   # seeded


def test_probcover_ties_option():
    X = np.random.default_rng(1).normal(size=(400, 16))
    rnd = get_selector("probcover").select(X, 40, random_state=3)
    idx = get_selector("probcover", ties="index").select(X, 40, random_state=3)
    assert rnd.info["ties"] == "random" and idx.info["ties"] == "index"
    assert rnd.info["delta"] == idx.info["delta"]                   # only the tie-break differs
    assert np.mean(idx.indices) < np.mean(rnd.indices)              # index ties lean to the first rows
    with pytest.raises(ValueError, match="ties"):
        get_selector("probcover", ties="first").select(X, 4, random_state=0)


def test_probcover_with_obvious_delta_covers_each_blob_once():
    X, truth = axis_blobs(0, sigma=0.3)  # normalised blobs lie ~1.41 apart, within-blob < 0.3
    sel = get_selector("probcover", delta=0.5).select(X, 3, random_state=0)
    assert sorted(truth[sel.indices].tolist()) == [0, 1, 2]  # equal ball sizes: one row of each blob
    old = get_selector("probcover", delta=0.5, ties="index").select(X, 3, random_state=0)
    assert old.indices.tolist() == [0, 30, 60]                # index ties: the lowest row of each blob
    assert sel.info["coverage"] == 1.0 and sel.info["n_random"] == 0
    more = get_selector("probcover", delta=0.5).select(X, 5, random_state=0)
    assert more.indices[:3].tolist() == sel.indices.tolist() and more.info["n_random"] == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probcover_chooses_delta_by_purity(seed):
    X, truth = axis_blobs(seed, sigma=0.3)
    sel = get_selector("probcover").select(X, 3, random_state=seed)
    assert sel.info["purity"] >= 0.95 and sel.info["n_pseudo_clusters"] == 3
    assert 0 < sel.info["delta"] < np.sqrt(2)
    assert sorted(truth[sel.indices].tolist()) == [0, 1, 2]
    grid = get_selector("probcover", delta_grid=[0.1, 0.3, 0.5, 1.9]).select(X, 3, random_state=seed)
    assert grid.info["delta"] in (0.1, 0.3, 0.5)  # 1.9 would merge blobs: purity far below 0.95


# ---------------------------------------------------------------- ra
def test_proportional_split_and_facility_location_hand_computed():
    assert proportional_split([50, 30, 20], 7).tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4
    assert proportional_split([1, 1, 1], 2).tolist() == [1, 1, 0]  # equal remainders -> lower index
    assert proportional_split([3, 5], 8).tolist() == [3, 5]
    S = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.4, 1.0]])
    # column sums 1.5, 1.9, 1.0 -> col 1; then gains: col 0: 0.5, col 2: 0.6 -> col 2; f = .5 + 1 + 1
    cols, f = facility_location_greedy(S, 2)
    assert cols.tolist() == [1, 2] and f == pytest.approx(2.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ra_picks_the_most_representative_row_of_each_blob(seed):
    X, truth = axis_blobs(seed)
    sel = get_selector("ra").select(X, 3, random_state=seed)
    assert sel.info["k"] == 3 and sorted(sel.info["cluster_sizes"]) == [30, 30, 30]
    assert sorted(truth[sel.indices].tolist()) == [0, 1, 2]
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    for i in sel.indices:  # brute force: the member with the largest summed cosine to its blob
        m = np.flatnonzero(truth == truth[i])
        assert i == m[np.argmax((Z[m] @ Z[m].T).sum(0))]
    six = get_selector("ra", n_groups=3).select(X, 6, random_state=seed)
    assert np.bincount(truth[six.indices]).tolist() == [2, 2, 2]


# ---------------------------------------------------------------- subsampling paths stay exact
def test_large_pool_paths():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 8))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sels = {
            "ra": get_selector("ra", max_cluster_points=200, max_candidates=40, max_coverage=100),
            "typiclust": get_selector("typiclust", minibatch_above=100),
            "probcover": get_selector("probcover", purity_sample=100, delta=1.5, max_edges=20_000),
        }
        for name, s in sels.items():
            a = pick(s, X, 60, random_state=3)
            b = pick(s, X, 60, random_state=3)
            assert len(set(a.indices.tolist())) == 60, name
            assert a.indices.tolist() == b.indices.tolist(), name
    assert any("halving delta" in str(x.message) for x in w)
    assert sels["typiclust"].select(X, 5, random_state=0).info["clusterer"] == "minibatch_kmeans"


# ---------------------------------------------------------------- contract, every strategy
BASELINES = {"kcenter", "kmedian", "ra", "typiclust", "probcover"}


def test_baselines_are_registered():
    assert BASELINES <= set(available())


def _pools():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(24, 4))
    dup = np.repeat(rng.normal(size=(4, 3)), [9, 6, 3, 2], axis=0)  # 20 rows, 4 distinct
    line = rng.normal(size=(15, 1))
    return {"plain": X, "duplicates": dup, "d1": line, "all_same": np.ones((6, 2))}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("pool", ["plain", "duplicates", "d1", "all_same"])
def test_contract_every_strategy(name, pool):
    X = _pools()[pool]
    n = len(X)
    for budget in sorted({1, 2, n // 2, n - 1, n}):
        a = pick(get_selector(name), X, budget, random_state=11)
        b = pick(get_selector(name), X, budget, random_state=11)
        assert a.indices.shape == (budget,)
        assert len(np.unique(a.indices)) == budget
        assert a.indices.min() >= 0 and a.indices.max() < n
        assert a.clusters.shape == (budget,) and a.distances.shape == (budget,)
        assert np.isfinite(a.distances).all()
        json.dumps(a.info)  # the manifest must be able to store it
        assert a.indices.tolist() == b.indices.tolist(), f"{name} is not reproducible for a fixed seed"


# ---------------------------------------------------------------- random, fixed draws
def test_random_fixed_draw_ignores_the_seed_and_plain_random_does_not():
    X = np.zeros((50, 2))
    plain = [get_selector("random").select(X, 10, random_state=s).indices.tolist() for s in range(3)]
    assert plain[0] == np.random.default_rng(0).choice(50, 10, replace=False).tolist()   # unchanged baseline
    assert len({tuple(p) for p in plain}) == 3
    fixed = [get_selector("random[draw=4]").select(X, 10, random_state=s) for s in range(3)]
    assert len({tuple(f.indices) for f in fixed}) == 1 and fixed[0].info == {"draw": 4}
    other = get_selector("random", draw=5).select(X, 10, random_state=0).indices
    assert other.tolist() != fixed[0].indices.tolist()
    assert fixed[0].indices.tolist() != get_selector("random").select(X, 10, random_state=4).indices.tolist()  # salted
    for bad in (-1, 1.5, True, "x"):
        with pytest.raises(ValueError, match="draw="):
            get_selector("random", draw=bad)
