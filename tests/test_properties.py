"""Property tests (hypothesis) of the selector contract, for every strategy in the registry.

For any feature matrix (random values, duplicated rows, rows constant across their features, all
rows equal, one tight cluster, a few tight blobs; n in 1..60, d in 1..8, float16/float32/float64,
|x| <= 1e4; plus explicit edge cases: n = 1, d = 1, budget = n, integer features) and any valid
budget in 1..n, every selector returns exactly ``budget`` unique int64 indices in [0, n), a (budget,)
cluster array and a finite, non-negative (budget,) distance array; with labels, each pick's cluster is
its label; without, clusters are -1 and distances are to the pool mean; ``info`` is JSON-serialisable.
The caller's array is never modified, and a second call with the same seed gives the identical result.
NaN or infinite features raise a ValueError that names the bad rows; bad budgets (0, negative, n + 1,
floats, bools, strings, None) raise a clear TypeError/ValueError naming the value. Finite but huge
features (float64 up to ~1e307, float32 up to its max) give a valid result with finite distances and
the same picks as the features scaled down by a power of two; beyond the float64 distance range they
are refused with an error naming the rows.

The strategies are looped over ``available()``, so a newly registered selector is covered without
editing this file. Examples are derandomised (the same in CI as here); per-selector example counts
keep the whole file well under a minute on a shared 2-core CPU. Degenerate-but-valid inputs may
warn (fewer distinct rows than picks, ...): UserWarning is ignored here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from coldseg.select.registry import available, get_selector
from conftest import pick

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SELECTORS = available()

#: hypothesis examples per selector for the main contract property (each example selects twice).
#: Sized on the shared 2-core CPU (whole file ~20-35 s): ca fits K-means for every K up to 20
#: (~0.5 s a call at n = 60); the explicit @example cases below run on top of these.
EXAMPLES = {"ca": 12, "typiclust": 30, "probcover": 35}
DEFAULT_EXAMPLES = 60

MAX_N, MAX_D = 60, 8
LIM = 1e4  # |feature| bound: finite in float16 (max 65504) and far from float64 overflow
DTYPES = (np.float32, np.float64, np.float16)
KINDS = ("gaussian", "blobs", "duplicated", "random", "constant_rows", "tight_cluster", "all_equal")


def _settings(max_examples: int):
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,  # reproducible in CI
        database=None,  # no .hypothesis/ folder in the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


values = st.floats(-LIM, LIM, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def feature_matrices(draw, max_n: int = MAX_N, max_d: int = MAX_D) -> np.ndarray:
    """An (n, d) finite matrix of one of KINDS, in one of DTYPES.

    Shape, kind and dtype come from a numpy plan seeded by hypothesis, so that they are spread evenly
    (hypothesis alone draws n = 1 and the first choice most of the time, and the slow selectors get few
    examples); the values of the "random" and "duplicated" kinds come from hypothesis itself.
    """
    plan = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="plan"))
    n = int(plan.integers(1, max_n + 1))
    d = 1 if plan.random() < 0.25 else int(plan.integers(1, max_d + 1))  # d = 1 often
    kind = KINDS[plan.integers(len(KINDS))]
    dtype = DTYPES[plan.integers(len(DTYPES))]
    if kind == "gaussian":  # distinct rows at a random scale (1e-3 .. 1e3)
        X = 10.0 ** plan.integers(-3, 4) * plan.standard_normal((n, d))
    elif kind == "random":  # hypothesis values: repeated values, zeros, tiny and huge magnitudes
        X = draw(hnp.arrays(np.float64, (n, d), elements=values))
    elif kind == "duplicated":  # n rows drawn (with repeats) from m <= n distinct rows
        m = int(plan.integers(1, n + 1))
        base = draw(hnp.arrays(np.float64, (m, d), elements=values, unique=True))
        X = base[np.concatenate([np.arange(m), plan.integers(m, size=n - m)])]
        X = X[plan.permutation(n)]
    elif kind == "constant_rows":  # every row holds one value in all its features
        X = np.repeat(10.0 ** plan.integers(-3, 4) * plan.standard_normal((n, 1)), d, axis=1)
    elif kind == "all_equal":
        X = np.repeat(10.0 ** plan.integers(-3, 4) * plan.standard_normal((1, d)), n, axis=0)
    else:  # tight_cluster (one blob) or blobs (2..5 blobs), noise relative to the centre scale
        k = 1 if kind == "tight_cluster" else int(plan.integers(2, 6))
        centres = 10.0 ** plan.integers(-3, 4) * plan.standard_normal((k, d))
        rel = plan.choice([1e-9, 1e-6, 1e-3] if k == 1 else [1e-3, 1e-2, 1e-1])
        scale = rel * max(1e-3, float(np.abs(centres).max()))
        X = centres[plan.integers(k, size=n)] + scale * plan.standard_normal((n, d))
    return np.clip(X, -LIM, LIM).astype(dtype)


@st.composite
def cases(draw) -> tuple[np.ndarray, int, int]:
    """(features, valid budget, seed): budget = n and budget = 1 a quarter of the time each."""
    X = draw(feature_matrices())
    n = X.shape[0]
    seed = draw(st.integers(0, 2**32 - 1))
    u = np.random.default_rng(seed).random()  # an even spread (hypothesis favours its bounds)
    budget = n if u < 0.25 else 1 if u < 0.5 else draw(st.integers(1, n))
    return X, budget, seed


def assert_contract(sel, X: np.ndarray, budget: int) -> None:
    n = X.shape[0]
    idx = np.asarray(sel.indices)
    assert idx.shape == (budget,)
    assert idx.dtype == np.int64
    assert len(np.unique(idx)) == budget, f"repeated picks: {idx.tolist()}"
    assert idx.min() >= 0 and idx.max() < n
    assert np.asarray(sel.clusters).shape == (budget,)
    dist = np.asarray(sel.distances)
    assert dist.shape == (budget,)
    assert np.isfinite(dist).all() and (dist >= 0).all(), f"distances {dist.tolist()}"
    if sel.labels is not None:  # clustered: every pick's cluster is its pool label
        labels = np.asarray(sel.labels)
        assert labels.shape == (n,)
        np.testing.assert_array_equal(sel.clusters, labels[idx])
    else:  # no clusters: cluster -1 and the distance to the pool mean
        assert (np.asarray(sel.clusters) == -1).all()
        X64 = X.astype(np.float64)
        e = int(np.frexp(np.abs(X64).max())[1])  # computed at scale 2**-e: exact, never overflows
        Xs = np.ldexp(X64, -e)
        expect = np.ldexp(np.linalg.norm(Xs[idx] - Xs.mean(axis=0), axis=1), e)
        np.testing.assert_allclose(dist, expect, rtol=1e-5, atol=1e-5 * (1.0 + np.abs(X64).max()))
    json.dumps(sel.info)  # the manifest must be able to hold it


def assert_same(a, b) -> None:
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.clusters, b.clusters)
    np.testing.assert_array_equal(a.distances, b.distances)
    if a.labels is None:
        assert b.labels is None
    else:
        np.testing.assert_array_equal(a.labels, b.labels)
    assert json.dumps(a.info, sort_keys=True) == json.dumps(b.info, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# valid input: the contract and determinism


@pytest.mark.parametrize("name", SELECTORS)
def test_contract_and_determinism_on_any_pool(name):
    @_settings(EXAMPLES.get(name, DEFAULT_EXAMPLES))
    @given(case=cases())
    @example(case=(np.zeros((1, 1)), 1, 0))  # a pool of one
    @example(case=(np.full((7, 3), 2.5, np.float16), 7, 1))  # all equal, budget = n, float16
    @example(case=(np.arange(9, dtype=np.float32)[:, None], 9, 2))  # d = 1, budget = n
    @example(case=(np.repeat(np.eye(3), 4, axis=0), 5, 3))  # 3 distinct rows, 5 picks
    @example(case=(np.repeat(np.arange(6.0)[:, None], 4, axis=1), 3, 4))  # constant rows
    @example(case=(np.array([[0], [3], [3], [7], [250]], np.uint8), 3, 6))  # integer features
    def prop(case):
        X, budget, seed = case
        before = X.copy()
        sel = get_selector(name)
        a = pick(sel, X, budget, random_state=seed)
        assert_contract(a, X, budget)
        np.testing.assert_array_equal(X, before)  # the caller's array is never modified
        assert X.dtype == before.dtype
        b = pick(sel, X, budget, random_state=seed)  # same instance: no state leaks across calls
        assert_same(a, b)

    prop()


@pytest.mark.parametrize("name", SELECTORS)
def test_numpy_integer_budget_is_accepted(name):
    X = np.random.default_rng(0).normal(size=(12, 3))
    a = pick(get_selector(name), X, np.int64(4), random_state=5)
    b = pick(get_selector(name), X, 4, random_state=5)
    assert_contract(a, X, 4)
    assert_same(a, b)


# ---------------------------------------------------------------------------------------------
# NaN / infinite features


@st.composite
def poisoned(draw, max_bad: int = 10) -> tuple[np.ndarray, list[int], int]:
    """(features with NaN/±inf in some rows, the sorted bad rows, a valid budget)."""
    n = draw(st.integers(1, MAX_N))
    d = draw(st.integers(1, MAX_D))
    X = draw(hnp.arrays(np.float64, (n, d), elements=values)).astype(draw(st.sampled_from(DTYPES)))
    bad = sorted(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=min(n, max_bad))))
    for r in bad:
        cols = draw(st.sets(st.integers(0, d - 1), min_size=1))
        for c in cols:
            X[r, c] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return X, bad, draw(st.integers(1, n))


@pytest.mark.parametrize("name", SELECTORS)
def test_nan_or_inf_features_name_the_rows(name):
    @_settings(25)
    @given(case=poisoned())
    @example(case=(np.array([[0.0], [1.0], [2.0], [np.nan], [4.0], [5.0], [6.0], [np.inf]]), [3, 7], 2))
    def prop(case):
        X, bad, budget = case
        with pytest.raises(ValueError) as err:
            pick(get_selector(name), X, budget, random_state=0)
        msg = str(err.value)
        assert ", ".join(map(str, bad)) in msg, f"{msg!r} does not name rows {bad}"
        assert "nan" in msg.lower() or "inf" in msg.lower()

    prop()


@pytest.mark.parametrize("name", SELECTORS)
def test_many_bad_rows_give_a_short_message(name):
    X = np.ones((60, 2))
    X[::2, 1] = np.nan  # 30 bad rows
    with pytest.raises(ValueError) as err:
        pick(get_selector(name), X, 3, random_state=0)
    msg = str(err.value)
    assert "0, 2, 4, 6, 8" in msg and "30" in msg  # the first rows and the count
    assert len(msg) < 300


# ---------------------------------------------------------------------------------------------
# bad budgets


BAD_BUDGETS = [  # (budget or "n+1", exception, text the message must hold)
    (0, ValueError, "budget=0"),
    (-3, ValueError, "budget=-3"),
    ("n+1", ValueError, "budget=11"),
    (2.0, TypeError, "2.0"),
    (2.5, TypeError, "2.5"),
    (np.float64(3.0), TypeError, "3.0"),
    (True, TypeError, "True"),
    (False, TypeError, "False"),
    (None, TypeError, "None"),
    ("3", TypeError, "'3'"),
]


@pytest.mark.parametrize("name", SELECTORS)
@pytest.mark.parametrize("budget, exc, text", BAD_BUDGETS, ids=[repr(b[0]) for b in BAD_BUDGETS])
def test_bad_budget_is_a_clear_error(name, budget, exc, text):
    X = np.random.default_rng(0).normal(size=(10, 3))
    if isinstance(budget, str) and budget == "n+1":
        budget = 11
    with pytest.raises(exc) as err:
        pick(get_selector(name), X, budget, random_state=0)
    msg = str(err.value)
    assert "budget" in msg and text in msg, msg
    if exc is ValueError and budget > 0:
        assert "10" in msg  # names the pool size it exceeds


@pytest.mark.parametrize("name", SELECTORS)
def test_out_of_range_budget_on_any_pool(name):
    @_settings(30)
    @given(X=feature_matrices(), extra=st.integers(1, 1000), low=st.booleans())
    def prop(X, extra, low):
        n = X.shape[0]
        budget = 1 - extra if low else n + extra  # <= 0 or > n
        with pytest.raises(ValueError) as err:
            pick(get_selector(name), X, budget, random_state=0)
        assert f"budget={budget}" in str(err.value)

    prop()


# ---------------------------------------------------------------------------------------------
# finite but huge features (outside the range above): same picks as the features scaled down, never inf


#: (id, features, budget). Squared distances overflow: float64 beyond ~1e154, float32 beyond ~1e19;
#: Selector.select scales such matrices by a power of two first (select/base.py, module doc).
HUGE = [
    ("float64-1e155", np.array([[0.0], [1e155]]), 1),
    ("float32-1e20", np.array([[0.0], [1e20]], np.float32), 1),
    ("float64-1e300-blobs", np.repeat([[1e300, -1e300], [0.0, 0.0], [-3e299, 5e299]], 3, axis=0)
     * (1 + 1e-3 * np.arange(9))[:, None], 4),
    ("float32-3e38-mixed", np.array([[3e38, 1.0], [-3e38, 2.0], [1e30, -5.0], [0.0, 0.0], [2.5e38, 1e10]],
                                    np.float32), 3),
]


@pytest.mark.filterwarnings("error:overflow encountered:RuntimeWarning")  # no overflow anywhere
@pytest.mark.parametrize("name", SELECTORS)
@pytest.mark.parametrize("case_id, X, budget", HUGE, ids=[h[0] for h in HUGE])
def test_huge_finite_features_give_a_valid_result(name, case_id, X, budget):
    sel = pick(get_selector(name), X, budget, random_state=0)
    assert_contract(sel, X, budget)  # finite distances, in the caller's units
    assert sel.info["feature_scale_log2"] < 0


#: (power of two k, dtype): k large enough that X * 2**k crosses the rescaling threshold
SCALES = [(50, np.float64), (480, np.float64), (900, np.float64), (60, np.float32), (100, np.float32)]


@pytest.mark.filterwarnings("error:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("name", SELECTORS)
@pytest.mark.parametrize("k, dtype", SCALES, ids=[f"{np.dtype(d).name}-2**{k}" for k, d in SCALES])
def test_huge_features_pick_as_their_scaled_down_copy(name, k, dtype):
    """X * 2**k picks exactly what X picks, with distances times 2**k (the rescaling is exact)."""
    rng = np.random.default_rng(k)
    X = np.concatenate([rng.normal(size=(8, 3)) + c for c in ((0, 0, 0), (6, 0, 0), (0, 6, 6))])
    X = X.astype(dtype)  # (24, 3) three blobs
    big = np.ldexp(X, k).astype(dtype)
    assert np.isfinite(big).all()
    a = pick(get_selector(name), X, 7, random_state=3)
    b = pick(get_selector(name), big, 7, random_state=3)
    assert "feature_scale_log2" not in a.info  # normal features are used untouched
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.clusters, b.clusters)
    np.testing.assert_allclose(b.distances, np.ldexp(a.distances, k), rtol=1e-5)
    assert np.isfinite(b.distances).all()


@pytest.mark.parametrize("name", SELECTORS)
def test_features_beyond_the_float64_distance_range_are_refused_naming_rows(name):
    X = np.array([[0.0, 1.0], [1.7e308, 0.0], [2.0, 2.0], [-1e308, 5.0]])
    with pytest.raises(ValueError) as err:
        pick(get_selector(name), X, 2, random_state=0)
    msg = str(err.value)
    assert "2 row(s): 1, 3" in msg and "too large" in msg and "divide the features" in msg, msg


def test_normal_features_are_not_copied_or_rescaled():
    from coldseg.select.base import overflow_exponent

    assert overflow_exponent(np.array([[1e12, -3.0]])) == 0  # below 2**40 ~ 1.1e12
    assert overflow_exponent(np.array([[3.0, -2.0**40]])) == 41  # max |x| = 2**40 -> 2**40 * 2**-41 = 0.5
    assert overflow_exponent(np.array([[1e12]], np.float32)) == 0
    assert overflow_exponent(np.array([[1e147]])) == 489
    assert overflow_exponent(np.array([[-3e38]], np.float32)) == 128
