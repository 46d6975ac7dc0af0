"""Attention modules: thin owners of projections that call :func:`attnlab.core.attend_prepared`.

Self vs cross is how the module is called: ``CrossAttention(x, context=memory)`` reads another stream,
``SelfAttention(x)`` (the same module with ``context = x``) reads its own input. Both return the context tensor;
``return_weights=True`` returns an :class:`Attended` (context, weights, path, reason), and
:func:`context_and_weights` unpacks either.
"""

from ..core import Attended, context_and_weights
from .cache import KVCache
from .cross_attention import CrossAttention, Memory, upgrade_state_dict
from .self_attention import SelfAttention

__all__ = [
    "Attended",
    "CrossAttention",
    "KVCache",
    "Memory",
    "SelfAttention",
    "context_and_weights",
    "upgrade_state_dict",
]
