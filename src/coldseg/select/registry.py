"""Name -> selector class. Strategies register themselves; callers resolve names here."""
from __future__ import annotations

import warnings
from typing import Any, TypeVar

import numpy as np

from coldseg.select.base import Selector

_REGISTRY: dict[str, type[Selector]] = {}

S = TypeVar("S", bound=type[Selector])


def register(cls: S) -> S:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` to be registered")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"strategy name {cls.name!r} is already taken by {_REGISTRY[cls.name].__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Sorted names of every registered strategy."""
    _load_builtins()
    return sorted(_REGISTRY)


def _parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true'/'false' -> bool, 'none' -> None, anything else -> the string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``"name[key=value;key=value]"`` -> (name, params).

    The bracket form sets a strategy's constructor arguments from the command line, e.g.
    ``typiclust[k_nn=10]``; values are read as int, float, true/false, none, else string.
    """
    spec = spec.strip()
    if "[" not in spec:
        if "]" in spec:
            raise ValueError(f"strategy {spec!r}: ']' without '['; write e.g. typiclust[k_nn=10]")
        return spec, {}
    name, _, rest = spec.partition("[")
    if not rest.endswith("]") or "[" in rest[:-1] or "]" in rest[:-1]:
        raise ValueError(f"strategy {spec!r}: parameters go in one pair of brackets at the end, "
                         "e.g. typiclust[k_nn=10;min_cluster_size=3]")
    params: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in rest[:-1].split(";"))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ValueError(f"strategy {spec!r}: {item!r} is not key=value")
        if key.strip() in params:   # the last would silently win, and the results would name both
            raise ValueError(f"strategy {spec!r}: {key.strip()!r} is given twice; give each setting once")
        params[key.strip()] = _parse_value(value)
    return name.strip(), params


def split_specs(text: str) -> list[str]:
    """Split a comma list of strategy specs, ignoring commas inside brackets; drops empties."""
    out, depth, cur = [], 0, []
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [t for t in out if t]


def get_selector(name: str, **params: Any) -> Selector:
    """An instance of the strategy ``name`` (a plain name or a ``name[key=value;...]`` spec).

    The error lists the valid names; an unknown parameter names the strategy's accepted ones.
    """
    _load_builtins()
    base, spec_params = parse_spec(name)
    try:
        cls = _REGISTRY[base]
    except KeyError:
        from coldseg.iterative import iterative_names

        if base in iterative_names():
            raise ValueError(f"strategy {base!r} is an iterative baseline (it needs labels between rounds): "
                             f"it runs in `coldseg benchmark` only; choose one of: {', '.join(available())}") from None
        raise ValueError(f"unknown strategy {base!r}; choose one of: {', '.join(available())}") from None
    merged = {**spec_params, **params}
    try:
        return cls(**merged)
    except TypeError as err:
        import inspect

        accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise ValueError(f"strategy {base!r} rejects parameters {sorted(merged)}: {err}; it accepts: "
                         f"{', '.join(accepted) or 'none'}") from None


def check_strategy(name: str, label: str = "strategy", **params: Any) -> None:
    """Build the strategy ``name`` (a spec, as :func:`get_selector` takes) and run it once on a tiny
    synthetic pool (12 x 4 features from a fixed generator, budget 2, stand-in side arrays for what it
    ``needs``), so that a bad setting (``ca-typical[start=bogus]``, ``typiclust[k_nn=-3]``) fails now,
    before any image is read or any training, instead of after. A ValueError or TypeError becomes
    ``ValueError("<label> '<name>': <reason>")``.

    Costs milliseconds. It runs on an instance of its own with its own seed and warnings silenced, so the
    real selection (its instance, generators and results) is untouched.
    """
    selector = get_selector(name, **params)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 4))
    side = {key: rng.uniform(0.1, 0.9, size=12) for key in selector.needs}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            selector.select(X, 2, random_state=0, side=side)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{label} {name!r}: {err}") from None


def selector_class(name: str) -> type[Selector]:
    _load_builtins()
    name = parse_spec(name)[0]
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(available())}")
    return _REGISTRY[name]


_loaded = False


def _load_builtins() -> None:
    """Import the modules whose classes register themselves (once, lazily, to avoid import cycles)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


#: modules holding built-in strategies; a new strategy module adds itself here
_BUILTIN_MODULES: list[str] = [
    "coldseg.select.random",
    "coldseg.select.ca",
    "coldseg.select.kcenter",
    "coldseg.select.kmedian",
    "coldseg.select.representative",
    "coldseg.select.typiclust",
    "coldseg.select.probcover",
    "coldseg.select.ca_typical",
    "coldseg.select.herding",
    "coldseg.select.hard_contrast",
]

