"""Name -> selector class. Strategies register themselves; callers resolve names here."""
from __future__ import annotations

from typing import Any, TypeVar

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


def get_selector(name: str, **params: Any) -> Selector:
    """An instance of the strategy called ``name``; the error lists the valid names."""
    _load_builtins()
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of: {', '.join(available())}") from None
    return cls(**params)


def selector_class(name: str) -> type[Selector]:
    _load_builtins()
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
]

