"""A small ResNet-style CNN in which any registered block can be inserted after chosen stages.

    stem (3x3 conv, BN, ReLU) -> stage1 -> stage2 (/2) -> stage3 (/2) -> global average pool -> linear

Stages are basic residual blocks (He et al. 2016), widths 32/64/128 by default, ``depth`` blocks each; the map
is at full resolution after ``stem`` and ``stage1``, 1/2 after ``stage2``, 1/4 after ``stage3`` (sizes rounded up).
Attention blocks go *after* a stage, at that stage's width:

    AttentionResNet(blocks={"stage3": "nonlocal"})
    AttentionResNet(blocks={"stage2": ("sagan", {"kv_stride": 2})})
    AttentionResNet(blocks=[("stage2", "cbam"), ("stage3", "nonlocal", {"pairwise": "dot"})])

Blocks with a residual path (non-local, SAGAN, criss-cross, BoTNet) start as the identity or close to it;
channel/spatial gates (SE, ECA, CBAM) rescale; AA-conv and SASA are layers (no residual) and add depth.
``attention_sites()`` lists each inserted block's sites without running the model (it works on the meta device).
``forward(x, return_weights=True, query_pixel=(row, col))`` returns a :class:`~attnlab.vision.base.VisionOutput`
whose weights are named ``"{stage}.{i}.{map}"``; ``query_pixel`` is in input-image coordinates and is scaled to
each stage's map (default: the centre).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from .base import AttentionSite, VisionOutput, check_image, check_positive_int, resolve_pixel
from .registry import get_block

__all__ = ["STAGES", "AttentionResNet", "BasicBlock"]

STAGES = ("stem", "stage1", "stage2", "stage3")
BlockSpec = str | tuple[str, Mapping[str, object]]


class BasicBlock(nn.Module):
    """``relu(BN(conv3x3(relu(BN(conv3x3(x))))) + shortcut(x))``; the shortcut projects when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.norm1(self.conv1(x)))
        return self.relu(self.norm2(self.conv2(h)) + self.shortcut(x))


def _normalize_blocks(
    blocks: Mapping[str, BlockSpec] | Sequence[tuple] | None,
) -> list[tuple[str, str, dict[str, object]]]:
    """``(stage, name, options)`` triples from the mapping or list forms."""
    if blocks is None:
        return []
    if isinstance(blocks, Mapping):
        items = [(stage, *((spec, {}) if isinstance(spec, str) else spec)) for stage, spec in blocks.items()]
    elif isinstance(blocks, Sequence) and not isinstance(blocks, str):
        items = [tuple(item) + ({},) * (3 - len(item)) if isinstance(item, tuple | list) else item for item in blocks]
    else:
        raise TypeError(
            f"blocks must be a mapping stage -> name, or a list of (stage, name[, options]); received {blocks!r}"
        )
    triples = []
    for item in items:
        if not (
            isinstance(item, tuple) and len(item) == 3 and isinstance(item[1], str) and isinstance(item[2], Mapping)
        ):
            raise TypeError(f"each block must be (stage, name) or (stage, name, options); received {item!r}")
        stage, name, options = item
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {', '.join(STAGES)}; received {stage!r}")
        triples.append((stage, name, dict(options)))
    return triples


class AttentionResNet(nn.Module):
    """``AttentionResNet(in_channels=1, num_classes=10, widths=(32, 64, 128), depth=1, blocks=None)``."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: Sequence[int] = (32, 64, 128),
        depth: int = 1,
        blocks: Mapping[str, BlockSpec] | Sequence[tuple] | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"widths must give 3 stage widths; received {tuple(widths)}")
        widths = tuple(check_positive_int(w, "widths") for w in widths)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        check_positive_int(depth, "depth")
        self.widths = {"stem": widths[0], "stage1": widths[0], "stage2": widths[1], "stage3": widths[2]}
        self.strides = {"stem": 1, "stage1": 1, "stage2": 2, "stage3": 4}

        def stage(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(BasicBlock(cin, cout, stride), *(BasicBlock(cout, cout) for _ in range(depth - 1)))

        self.stages = nn.ModuleDict(
            {
                "stem": nn.Sequential(
                    nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
                ),
                "stage1": stage(widths[0], widths[0], 1),
                "stage2": stage(widths[0], widths[1], 2),
                "stage3": stage(widths[1], widths[2], 2),
            }
        )
        self.attention = nn.ModuleDict({name: nn.ModuleList() for name in STAGES})  # blocks after each stage
        for stage_name, name, options in _normalize_blocks(blocks):
            self.attention[stage_name].append(get_block(name, self.widths[stage_name], **options))
        self.head = nn.Linear(widths[2], check_positive_int(num_classes, "num_classes"))

    def forward(
        self, x: Tensor, *, return_weights: bool = False, query_pixel: tuple[int, int] | None = None
    ) -> Tensor | VisionOutput:
        """``x [B, in_channels, H, W] -> logits [B, num_classes]`` (a VisionOutput with ``return_weights``)."""
        height, width = check_image(x, self.in_channels)
        if query_pixel is not None:
            if not return_weights:
                raise ValueError("query_pixel selects the weights to return; pass it with return_weights=True")
            query_pixel = resolve_pixel(query_pixel, height, width)
        weights: dict[str, Tensor] = {}
        for name in STAGES:
            x = self.stages[name](x)
            for i, block in enumerate(self.attention[name]):
                if not return_weights:
                    x = block(x)
                    continue
                pixel = None
                if query_pixel is not None:  # input coordinates -> this map's coordinates
                    pixel = (query_pixel[0] * x.shape[2] // height, query_pixel[1] * x.shape[3] // width)
                out = block(x, return_weights=True, query_pixel=pixel)
                x = out.output
                weights.update({f"{name}.{i}.{key}": value for key, value in out.weights.items()})
        logits = self.head(x.mean(dim=(2, 3)))  # (B, num_classes)
        return VisionOutput(logits, weights) if return_weights else logits

    def attention_sites(self) -> list[AttentionSite]:
        """Every inserted block's attention sites, in forward order (no forward pass needed)."""
        sites = []
        for name in STAGES:
            where = f"the {name} output ({self.widths[name]} channels, 1/{self.strides[name]} resolution)"
            for i, block in enumerate(self.attention[name]):
                sites.extend(block.attention_sites(f"attention.{name}.{i}", where))
        return sites
