"""coldseg: which images to annotate before any label exists (one-shot active learning for segmentation).

>>> import coldseg
>>> result = coldseg.select("images/", budget="10%", out="picks/")   # doctest: +SKIP
>>> result.ids[:3]                                                     # doctest: +SKIP
"""
__version__ = "0.1.0"

from coldseg.api import DEFAULT_STRATEGY, SelectResult, embed, parse_budget, select  # noqa: E402
from coldseg.select.registry import available as available_strategies, get_selector  # noqa: E402

__all__ = ["DEFAULT_STRATEGY", "SelectResult", "available_strategies", "embed", "get_selector",
           "parse_budget", "select", "__version__"]
