"""Self-attention in CNNs: channels-first blocks, one per file, built by name, and two small models.

``get_block(name, channels, **options)`` builds a block ``[B, C, Hs, Ws] -> [B, C, Hs, Ws]`` (any size):

==============  =====================================  ===================================  ==========================
name            mechanism                              paper                                memory beyond O(N*C)
==============  =====================================  ===================================  ==========================
se              channel gate from the global average   Hu et al. 2018                       O(C)
eca             channel gate, 1-D conv over channels   Wang et al. 2020                     O(C)
cbam            channel gate, then spatial gate        Woo et al. 2018                      O(N)
nonlocal        global self-attention, 4 pairwise f    Wang et al. 2018                     O(N) fused; concat [N, M]
sagan           global self-attention, gamma = 0       Zhang et al. 2018                    O(N) fused
aa_conv         conv concat MHSA, 2D relative logits   Bello et al. 2019                    [H, N, N] bias (refused
                                                                                            above memory_limit)
sasa            local k x k self-attention, rel. pos.  Ramachandran et al. 2019             [H, N, k*k] logits
botnet          bottleneck with 2D-relative MHSA       Srinivas et al. 2021                 [H, N, N] bias (refused
                                                                                            above memory_limit)
criss_cross     row + column attention, R = 2          Huang et al. 2019                    [N, Hs + Ws]
vit             ViT encoder (a model: -> [B, dim])     Dosovitskiy et al. 2021              [H, T, T] on patches
==============  =====================================  ===================================  ==========================

Models: :class:`AttentionResNet` (blocks inserted after chosen stages) and :class:`VisionTransformer`; both list
their attention sites with ``attention_sites()``.
"""

# Importing the block modules registers them.
from . import aa_conv, botnet, cbam, criss_cross, eca, non_local, sagan, sasa, se, vit
from .aa_conv import AugmentedConv
from .backbone import STAGES, AttentionResNet
from .base import AttentionSite, VisionBlock, VisionOutput
from .botnet import BoTBlock
from .cbam import CBAM
from .criss_cross import CrissCrossAttention
from .eca import EfficientChannelAttention
from .memory import DEFAULT_MEMORY_LIMIT, MemoryLimitError
from .non_local import NonLocal
from .registry import available_blocks, block_class, get_block, register_block
from .sagan import SAGANAttention
from .sasa import LocalSelfAttention
from .se import SqueezeExcitation
from .vit import VisionTransformer, ViTEncoder

__all__ = [
    "CBAM",
    "DEFAULT_MEMORY_LIMIT",
    "STAGES",
    "AttentionResNet",
    "AttentionSite",
    "AugmentedConv",
    "BoTBlock",
    "CrissCrossAttention",
    "EfficientChannelAttention",
    "LocalSelfAttention",
    "MemoryLimitError",
    "NonLocal",
    "SAGANAttention",
    "SqueezeExcitation",
    "ViTEncoder",
    "VisionBlock",
    "VisionOutput",
    "VisionTransformer",
    "aa_conv",
    "available_blocks",
    "block_class",
    "botnet",
    "cbam",
    "criss_cross",
    "eca",
    "get_block",
    "non_local",
    "register_block",
    "sagan",
    "sasa",
    "se",
    "vit",
]
