"""attnlab: attention and self-attention as one mechanism, ``context = E_p[V]``.

Layers, lowest first (a test enforces that imports only go downward):
``masks``, ``scores`` <- ``core`` <- ``attention`` <- ``seq``, ``vision`` <- ``train``, ``experiments`` <- ``cli``.
``data`` depends on nothing of the library; ``viz``/``report`` read recorded weights and saved results.
"""

from . import masks
from .attention import CrossAttention, KVCache, Memory, SelfAttention
from .core import Attended, attend, attend_prepared, context_and_weights
from .scores import Score, available_scores, get_score, register_score

__version__ = "0.1.0"  # the one version source: pyproject.toml reads this literal without importing attnlab

_SUBPACKAGES = {"seq", "vision", "data", "train"}


def __getattr__(name: str):
    """``attnlab.vision``, ``attnlab.seq``, ... import on first use, so ``import attnlab`` stays light."""
    if name in _SUBPACKAGES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'attnlab' has no attribute {name!r}")


__all__ = [
    "Attended",
    "CrossAttention",
    "KVCache",
    "Memory",
    "Score",
    "SelfAttention",
    "attend",
    "attend_prepared",
    "available_scores",
    "context_and_weights",
    "get_score",
    "masks",
    "register_score",
]
