"""ca-typical: hand-computed typicality and weighted FPS, shares, and the paper's settings as a special case."""
import numpy as np
import pytest

from coldseg import get_selector
from coldseg.select.ca_typical import sampled_typicality, weighted_fps
from coldseg.select.fps import farthest_point_sampling
from coldseg.select.registry import parse_spec, split_specs

PAPER = "ca-typical[start=farthest]"


def test_typicality_by_hand():
    X = np.array([[0.0], [1.0], [3.0]])
    # nearest other row: 1, 1, 2  ->  typicality 1, 1, 0.5
    t = sampled_typicality(X, k=1, sample=10, rng=np.random.default_rng(0))
    np.testing.assert_allclose(t, [1.0, 1.0, 0.5])
    # k=2: mean of the two others: (1+3)/2, (1+2)/2, (3+2)/2
    t2 = sampled_typicality(X, k=2, sample=10, rng=np.random.default_rng(0))
    np.testing.assert_allclose(t2, [1 / 2.0, 1 / 1.5, 1 / 2.5])
    assert sampled_typicality(X[:1], k=5, sample=10, rng=np.random.default_rng(0)).tolist() == [0.0]


def test_sampled_typicality_skips_self_and_keeps_ranking():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(0, 0.1, (300, 2)), rng.normal(0, 3.0, (100, 2))])
    full = sampled_typicality(X, k=10, sample=10_000, rng=np.random.default_rng(0))
    part = sampled_typicality(X, k=10, sample=120, rng=np.random.default_rng(0))
    assert np.isfinite(part).all() and (part > 0).all()
    # the dense core ranks above the diffuse halo in both
    assert full[:300].mean() > 5 * full[300:].mean() and part[:300].mean() > 5 * part[300:].mean()
    # a duplicated point: the copy, not itself, is its nearest neighbour at distance 0
    D = np.array([[0.0], [0.0], [5.0]])
    assert sampled_typicality(D, k=1, sample=10, rng=np.random.default_rng(0))[0] == pytest.approx(1e12)


def test_weighted_fps_is_fps_with_unit_weights_and_follows_weights():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 5))
    start = 17
    plain = farthest_point_sampling(X, 12, start=start)
    assert weighted_fps(X, 12, start, np.ones(200)).tolist() == plain.tolist()
    # 1-D by hand: from 0, plain FPS takes 10 next; a weight of 0.1 on it makes 6 win (6 > 10*0.1)
    L = np.array([[0.0], [6.0], [10.0]])
    assert weighted_fps(L, 2, 0, np.array([1.0, 1.0, 1.0])).tolist() == [0, 2]
    assert weighted_fps(L, 2, 0, np.array([1.0, 1.0, 0.1])).tolist() == [0, 1]


def test_paper_settings_pick_the_same_images_as_ca():
    X = np.random.default_rng(3).normal(size=(400, 8))
    for budget in (9, 25):
        a = get_selector(PAPER).select(X, budget, random_state=5)
        b = get_selector("ca").select(X, budget, random_state=5)
        assert sorted(a.indices.tolist()) == sorted(b.indices.tolist())
        assert a.info["k"] == b.info["k"]


def _blobs():
    rng = np.random.default_rng(4)
    big = rng.normal(0, 0.2, (180, 2))
    small = rng.normal(0, 0.2, (20, 2)) + 50.0
    return np.concatenate([big, small])


def test_allocation_equal_vs_proportional():
    X = _blobs()
    prop = get_selector("ca-typical[per_cluster=5;max_clusters=2;allocation=proportional]").select(
        X, 10, random_state=0)
    eq = get_selector("ca-typical[per_cluster=5;max_clusters=2;allocation=equal]").select(X, 10, random_state=0)
    in_small = lambda s: int((s.indices >= 180).sum())  # noqa: E731
    assert in_small(prop) == 1 and in_small(eq) == 5     # 10 * 20/200 = 1 vs 10 / 2 = 5
    assert sorted(prop.info["picks_per_cluster"]) == [1, 9]


def test_typical_start_is_the_densest_member():
    rng = np.random.default_rng(5)
    core = rng.normal(0, 0.01, (30, 2))
    halo = rng.normal(0, 1.0, (70, 2)) + 0.5
    X = np.concatenate([halo, core])
    t = sampled_typicality(X, 20, 10_000, np.random.default_rng(0))
    sel = get_selector("ca-typical[per_cluster=1;max_clusters=1]").select(X, 1, random_state=0)
    assert sel.indices.tolist() == [int(np.argmax(t))] and sel.indices[0] >= 70
    far = get_selector("ca-typical[per_cluster=1;max_clusters=1;start=farthest]").select(X, 1, random_state=0)
    assert far.indices[0] == int(np.argmax(((X - X.mean(0)) ** 2).sum(1)))


def test_default_is_ca_with_a_typical_start():
    X = np.random.default_rng(6).normal(size=(300, 4)).astype(np.float32)
    sel = get_selector("ca-typical").select(X, 30, random_state=0)
    paper = get_selector("ca").select(X, 30, random_state=0)
    assert len(set(sel.indices.tolist())) == 30 and sum(sel.info["picks_per_cluster"]) == 30
    assert sel.info["k"] == paper.info["k"] and sel.info["k_rule"] == "silhouette"
    assert sel.info["picks_per_cluster"] == paper.info["picks_per_cluster"]      # the same equal split
    # each cluster's first pick is its most typical member
    for c in range(sel.info["k"]):
        members = np.flatnonzero(sel.labels == c)
        t = sampled_typicality(X[members], 20, 4000, np.random.default_rng(0))
        first = sel.indices[sel.clusters == c][0]
        assert first == members[int(np.argmax(t))]
    again = get_selector("ca-typical").select(X, 30, random_state=0)
    assert again.indices.tolist() == sel.indices.tolist()


def test_budget_tied_k_gives_one_cluster_per_pick():
    X = np.random.default_rng(6).normal(size=(300, 4)).astype(np.float32)
    sel = get_selector("ca-typical[per_cluster=1;allocation=proportional;beta=1]").select(X, 30, random_state=0)
    assert sel.info["k"] == 30 and sum(sel.info["picks_per_cluster"]) == 30


@pytest.mark.parametrize("spec, msg", [
    ("ca-typical[allocation=fair]", "allocation='fair'"),
    ("ca-typical[start=centre]", "start='centre'"),
    ("ca-typical[per_cluster=0.5]", "per_cluster=0.5"),
    ("ca-typical[beta=-1]", "beta=-1"),
    ("ca-typical[k_nn=0]", "k_nn=0"),
])
def test_bad_parameters_are_named(spec, msg):
    with pytest.raises(ValueError, match=msg.replace("[", r"\[")):
        get_selector(spec).select(np.zeros((10, 2)) + np.arange(10)[:, None], 3, random_state=0)


def test_spec_parsing():
    assert parse_spec("typiclust") == ("typiclust", {})
    assert parse_spec("ca-typical[per_cluster=none;beta=0.5;start=medoid;x=true]") == (
        "ca-typical", {"per_cluster": None, "beta": 0.5, "start": "medoid", "x": True})
    assert split_specs("random, ca-typical[beta=1;k_nn=5],ca,") == ["random", "ca-typical[beta=1;k_nn=5]", "ca"]
    for bad in ("ca]", "ca[beta=1", "ca[beta]", "ca[1x=2]"):
        with pytest.raises(ValueError, match="strategy"):
            parse_spec(bad)
    with pytest.raises(ValueError, match="'alpha' is given twice"):   # the last value used to win silently
        parse_spec("herding[alpha=0.5; alpha=1]")
    with pytest.raises(ValueError, match="accepts: .*k_nn"):
        get_selector("typiclust[foo=1]")
