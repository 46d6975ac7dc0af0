"""Attention modules: thin owners of projections that call :func:`attnlab.core.attend_prepared`.

Self vs cross is how the module is called: ``CrossAttention(x, context=memory)`` reads another stream,
``SelfAttention(x)`` (the same module with ``context = x``) reads its own input.
"""

from .cache import KVCache
from .cross_attention import CrossAttention, Memory
from .self_attention import SelfAttention

__all__ = ["CrossAttention", "KVCache", "Memory", "SelfAttention"]
