"""Hand-computed cases for the paper's selection math: FPS, silhouette K, budget split, CA, random."""
import numpy as np
import pytest

from coldseg.select.ca import interleave, split_budget
from coldseg.select.fps import farthest_point_sampling
from coldseg.select.kmeans import choose_k
from coldseg.select.registry import available, get_selector


def test_fps_on_a_line_hand_computed():
    # points 0, 1, 2, 3, 10 on a line; mean = 3.2 -> farthest from the mean is 10 (index 4)
    X = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # from 10: farthest is 0 (idx 0); then min dists: 1->1, 2->2, 3->3 -> pick 3 (idx 3); then 1 vs 2:
    # d(1)=min(1,2)=1, d(2)=min(2,1)=1 -> tie, lowest index -> 1
    assert farthest_point_sampling(X, 4).tolist() == [4, 0, 3, 1]
    assert farthest_point_sampling(X, 2, start=0).tolist() == [0, 4]


def test_fps_never_repeats_on_duplicates_and_takes_all():
    X = np.zeros((5, 3))
    picks = farthest_point_sampling(X, 5)
    assert sorted(picks.tolist()) == [0, 1, 2, 3, 4]


def test_fps_from_labelled_distances():
    X = np.array([[0.0], [1.0], [5.0]])
    d = np.array([0.0, 1.0, 25.0])  # squared distances to a labelled point at 0
    assert farthest_point_sampling(X, 2, min_dist=d).tolist() == [2, 1]


def three_blobs(seed=0, n=40):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [10, 0], [0, 10]], float)
    return np.concatenate([rng.normal(c, 0.3, (n, 2)) for c in centres]), np.repeat([0, 1, 2], n)


@pytest.mark.parametrize("seed", [0, 1, 7, 42])
def test_silhouette_chooses_three_on_three_blobs(seed):
    X, truth = three_blobs(seed)
    ch = choose_k(X, range(2, 9), seed=seed)
    assert ch.k == 3
    assert max(ch.silhouette, key=ch.silhouette.get) == 3
    assert set(ch.silhouette) == set(range(2, 9))
    # every blob is one cluster
    for b in range(3):
        assert len(set(ch.labels[truth == b])) == 1


def test_silhouette_on_a_sample_matches_keys():
    X, _ = three_blobs(0, n=400)
    ch = choose_k(X, range(2, 5), seed=0, sample_size=300)
    assert ch.k == 3 and ch.sample_size == 300


def test_choose_k_degenerate_gives_one_cluster():
    ch = choose_k(np.ones((6, 2)), range(2, 5), seed=0)
    assert ch.k == 1 and ch.silhouette == {} and (ch.labels == 0).all()


@pytest.mark.parametrize("sizes,budget,expected", [
    ([2, 10, 10], 12, [2, 5, 5]),     # small cluster: its remainder (2) is shared by the others
    ([10, 10, 10], 9, [3, 3, 3]),     # the paper's equal split
    ([10, 10, 10], 10, [4, 3, 3]),    # remainder 1 to the lowest index among equally large
    ([1, 1, 5], 6, [1, 1, 4]),
    ([3, 8, 3], 4, [1, 2, 1]),        # remainder goes to the cluster with the most room
    ([4, 4], 8, [4, 4]),
])
def test_split_budget_hand_computed(sizes, budget, expected):
    q = split_budget(sizes, budget)
    assert q.tolist() == expected
    assert q.sum() == budget and (q <= np.array(sizes)).all()


def test_split_budget_rejects_overflow():
    with pytest.raises(ValueError, match="exceeds"):
        split_budget([1, 2], 4)


def test_interleave_round_robin():
    idx, cl = interleave([np.array([5, 6, 7]), np.array([1]), np.array([9, 8])])
    assert idx.tolist() == [5, 1, 9, 6, 8, 7]
    assert cl.tolist() == [0, 1, 2, 0, 2, 0]


def test_ca_on_three_blobs_picks_equally_with_exact_budget():
    X, truth = three_blobs(3)
    sel = get_selector("ca").select(X, 9, random_state=0)
    assert sel.info["k"] == 3
    assert len(set(sel.indices.tolist())) == 9
    assert sorted(np.bincount(truth[sel.indices]).tolist()) == [3, 3, 3]
    # first pick of each cluster is its member farthest from the cluster mean
    for c in range(3):
        members = np.flatnonzero(sel.labels == c)
        far = members[np.argmax(np.linalg.norm(X[members] - X[members].mean(0), axis=1))]
        assert sel.indices[sel.clusters == c][0] == far
    # distance_to_centroid is the distance to the pick's cluster mean
    c0 = X[sel.labels == sel.clusters[0]].mean(0)
    assert sel.distances[0] == pytest.approx(np.linalg.norm(X[sel.indices[0]] - c0), rel=1e-6)


def test_ca_small_cluster_warns_and_passes_remainder():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.1, (2, 2)), rng.normal(10, 0.1, (30, 2)), rng.normal(-10, 0.1, (30, 2))])
    sel = None
    with pytest.warns(UserWarning, match="fewer images than the equal share"):
        sel = get_selector("ca", k_max=3).select(X, 12, random_state=0)
    assert len(sel.indices) == 12
    assert sorted(sel.info["picks_per_cluster"]) == [2, 5, 5]


@pytest.mark.parametrize("name", ["ca", "random"])
def test_same_seed_same_selection(name):
    X, _ = three_blobs(5)
    a = get_selector(name).select(X, 10, random_state=11).indices
    b = get_selector(name).select(X, 10, random_state=11).indices
    assert a.tolist() == b.tolist()


def test_registry_lists_and_errors():
    assert {"ca", "random"} <= set(available())
    with pytest.raises(ValueError, match="choose one of: .*ca"):
        get_selector("nope")


@pytest.mark.parametrize("bad,match", [
    (np.array([[0.0, np.nan], [1.0, 1.0]]), "row"),
    (np.zeros(5), "2-D"),
])
def test_contract_rejects_bad_features(bad, match):
    with pytest.raises(ValueError, match=match):
        get_selector("random").select(bad, 1, random_state=0)


@pytest.mark.parametrize("budget", [0, -1, 4])
def test_contract_rejects_bad_budget(budget):
    with pytest.raises(ValueError):
        get_selector("random").select(np.zeros((3, 2)), budget, random_state=0)
