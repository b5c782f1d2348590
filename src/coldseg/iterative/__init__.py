"""Iterative baselines of the paper (Bayesian MC-dropout, core-set on U-Net features).

They cannot be one-shot :class:`~coldseg.select.base.Selector` s: each round needs the labels of the
images picked so far and a U-Net trained on them. Their contract:

    strategy.run(pairs, pool_idx, budget, *, seed, rounds, cfg, device, train_fn) -> IterativeResult

Round 1 is a seeded uniform random draw; every later round trains a U-Net on everything labelled so
far (``train_fn``, the only place labels enter), scores the unlabelled rest (``query``) and adds the
next picks. Round sizes (:func:`round_sizes`) sum to ``budget`` exactly. The model that is finally
scored is not trained here: the caller trains it on ``result.indices`` with the same SegConfig as
every one-shot strategy.

Indices are positions in ``pool_idx`` (as a Selector's are positions in its feature matrix), in pick
order. Names resolve through :func:`get_iterative`, whose error lists the valid names.
"""
from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar

import numpy as np

#: (positions in the pool (k,), seed, SegConfig) -> trained model in eval mode
TrainFn = Callable[[np.ndarray, int, Any], Any]


@dataclass
class IterativeResult:
    indices: np.ndarray                 # (budget,) int64 positions in pool_idx, unique, pick order
    round_sizes: list[int]              # picks per round; sums to budget
    info: dict[str, Any] = field(default_factory=dict)


def round_sizes(budget: int, rounds: int) -> list[int]:
    """Split ``budget`` into ``rounds`` near-equal rounds, larger ones first: (10, 3) -> [4, 3, 3].

    With budget < rounds there are only ``budget`` rounds of one image (a warning says so).
    """
    if budget < 1:
        raise ValueError(f"budget={budget} must be at least 1")
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be at least 1 (1 = a single random round)")
    if budget < rounds:
        warnings.warn(f"budget={budget} is smaller than rounds={rounds}; running {budget} round(s) of "
                      "one image", stacklevel=2)
        rounds = budget
    base, extra = divmod(budget, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def round_seed(seed: int, r: int) -> int:
    """Training seed of the model fitted after round ``r`` (never equal to the final model's ``seed``)."""
    return int(seed) * 1000 + 100 + r


class IterativeStrategy(ABC):
    """Base of iterative strategies: subclasses set ``name``/``summary`` and implement ``query``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def round_config(self, cfg: Any) -> Any:
        """The SegConfig of the intermediate models (e.g. with dropout for MC sampling)."""
        return cfg

    @abstractmethod
    def query(self, model: Any, images: np.ndarray, labelled: np.ndarray, n_new: int, *,
              seed: int, device: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """Pick ``n_new`` positions of ``images`` (n, 3, S, S) not in ``labelled`` (k,).

        Returns (picks (n_new,) int64 in pick order, facts for the run record).
        """

    def run(self, pairs: Any, pool_idx: np.ndarray, budget: int, *, seed: int, rounds: int = 3,
            cfg: Any = None, device: Any = None, train_fn: TrainFn | None = None) -> IterativeResult:
        pool_idx = np.asarray(pool_idx, dtype=np.int64)
        n = len(pool_idx)
        if not 1 <= budget <= n:
            raise ValueError(f"budget={budget} must lie in [1, {n}] (the pool holds {n} images)")
        if cfg is None:
            from coldseg.segment.train import SegConfig

            cfg = SegConfig()
        if train_fn is None:
            train_fn = default_train_fn(pairs, pool_idx, device)
        images = pairs.images[pool_idx]                      # (n, 3, S, S) uint8
        sizes = round_sizes(budget, rounds)
        rng = np.random.default_rng(seed)
        picked = rng.choice(n, size=sizes[0], replace=False).astype(np.int64)
        log: list[dict[str, Any]] = [{"round": 0, "picked": sizes[0], "how": "random"}]
        rcfg = self.round_config(cfg)
        for r, k in enumerate(sizes[1:], start=1):
            t0 = time.perf_counter()
            model = train_fn(picked, round_seed(seed, r), rcfg)
            t1 = time.perf_counter()
            new, facts = self.query(model, images, picked, k, seed=round_seed(seed, r), device=device)
            new = np.asarray(new, dtype=np.int64)
            if len(new) != k or len(np.unique(new)) != k or np.isin(new, picked).any():
                raise RuntimeError(f"{self.name}: round {r} returned {len(new)} picks "
                                   f"(wanted {k} new, unique, unlabelled positions)")
            picked = np.concatenate([picked, new])
            log.append({"round": r, "picked": k, "train_seconds": round(t1 - t0, 3),
                        "query_seconds": round(time.perf_counter() - t1, 3), **facts})
            del model
        return IterativeResult(picked, sizes, {"rounds": log})


def default_train_fn(pairs: Any, pool_idx: np.ndarray, device: Any) -> TrainFn:
    """Train a U-Net on the pool positions given (labels from ``pairs``), in this process."""
    from coldseg.segment.train import train_segmenter

    def train(pos: np.ndarray, seed: int, cfg: Any) -> Any:
        idx = pool_idx[pos]
        return train_segmenter(pairs.images[idx], pairs.masks[idx], cfg, seed=seed, device=device,
                               n_classes=pairs.n_classes)

    return train


_REGISTRY: dict[str, type[IterativeStrategy]] = {}
T = TypeVar("T", bound=type[IterativeStrategy])


def register_iterative(cls: T) -> T:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` to be registered")
    _REGISTRY[cls.name] = cls
    return cls


#: modules whose classes register themselves
_BUILTIN_MODULES = ["coldseg.iterative.mc_dropout", "coldseg.iterative.coreset_rounds"]


def _load() -> None:
    import importlib

    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def iterative_names() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def get_iterative(name: str, **params: Any) -> IterativeStrategy:
    _load()
    if name not in _REGISTRY:
        raise ValueError(f"unknown iterative strategy {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**params)


__all__ = ["IterativeResult", "IterativeStrategy", "TrainFn", "get_iterative", "iterative_names",
           "register_iterative", "round_seed", "round_sizes"]
