"""The data behind attention-over-image figures: which image positions a query reads, as arrays to draw.

Two sources (:func:`attnlab.viz.images.overlay_maps` draws either):

- Readers (DESIGN claim 5), :func:`reader_token_maps`: one map per output token of a digit-string read.
  ``CrossReader``: the decoder's cross-attention ``"decoder.cross"`` at step ``t`` (a distribution over the
  feature grid by construction). ``SingleStreamReader``: the text-token rows of a self-attention layer restricted
  to the image-token columns (``"stream.{i}.self"``); a text query also attends to earlier text tokens, so each
  row is renormalized over the image and the mass it gave the image is kept as ``image_share``.
- CNN attention blocks (claim 13): :func:`pixel_attention_map` gives a non-local / SAGAN (or any block that
  returns ``"pixel"`` weights) block's distribution for one query pixel over its key grid;
  :func:`spatial_gate_map` CBAM's spatial gate. The block is found inside any model (a trained or untrained
  backbone), its input captured by a forward hook during an ordinary forward pass, and the block re-run on that
  input with ``return_weights=True``: the model needs no weight-returning API of its own.

Heads are averaged (a mean of distributions is a distribution). Models are put in eval mode for the pass and
returned to their previous mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.experiments.reader import read_strings
from attnlab.vision.base import VisionBlock
from attnlab.vision.reader import BOS, DIGIT_OFFSET, EOS, PAD, CrossReader, SingleStreamReader, targets
from attnlab.viz.images import overlay_maps

__all__ = ["ImageMaps", "pixel_attention_map", "reader_token_maps", "spatial_gate_map"]


@dataclass(frozen=True)
class ImageMaps:
    """An image, maps over it (on the image's grid or a coarser one) and one title per map.

    ``image [H, W]``; ``maps [K, h, w]``; ``titles``: one per map; ``title``: what the maps are;
    ``query``: the query pixel ``(row, col)`` in image pixels, if any; ``image_share [K]``: for readers, the
    fraction of each token's weight that went to the image (1 for cross-attention; the single stream's maps are
    renormalized over the image)."""

    image: np.ndarray
    maps: np.ndarray
    titles: list[str]
    title: str = ""
    query: tuple[int, int] | None = None
    image_share: np.ndarray | None = None

    def draw(self, path: str | Path, **options) -> Path:
        """The PNG of :func:`attnlab.viz.images.overlay_maps`."""
        options = {"title": self.title or None, **options}
        return overlay_maps(self.image, self.maps, self.titles, path, query=self.query, **options)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _one_image(image: Tensor, channels: int | None = None) -> Tensor:
    """``image`` as ``[1, C, H, W]`` (from ``[H, W]``, ``[C, H, W]`` or ``[1, C, H, W]``)."""
    if not isinstance(image, Tensor) or not image.dtype.is_floating_point:
        got = image.dtype if isinstance(image, Tensor) else type(image).__name__
        raise TypeError(f"image: expected a floating-point tensor [H, W], [C, H, W] or [1, C, H, W], received {got}")
    if image.dim() == 2:
        image = image[None]
    if image.dim() == 3:
        image = image[None]
    if image.dim() != 4 or image.shape[0] != 1 or (channels is not None and image.shape[1] != channels):
        want = f"C = {channels}" if channels is not None else "one image"
        raise ValueError(
            f"image: expected [H, W], [C, H, W] or [1, C, H, W] with {want}, received {tuple(image.shape)}"
        )
    return image


def _gray(image: Tensor) -> np.ndarray:
    return image[0].float().mean(dim=0).cpu().numpy()  # (C, H, W) -> (H, W)


def _heads_mean(weights: Tensor, spatial_dims: int) -> Tensor:
    """``[B, (H,) ...]`` -> ``[B, ...]``: average the head axis if there is one."""
    return weights.mean(dim=1) if weights.dim() == spatial_dims + 2 else weights


# -- readers -----------------------------------------------------------------------------------------------------
def _token_name(token: int) -> str:
    if token == EOS:
        return "<eos>"
    if token >= DIGIT_OFFSET:
        return str(token - DIGIT_OFFSET)
    return {PAD: "<pad>", BOS: "<bos>"}.get(token, f"<{token}>")


def reader_token_maps(
    model: nn.Module,
    image: Tensor,
    digits: Sequence[int] | None = None,
    *,
    layer: int = -1,
) -> ImageMaps:
    """Per-token maps of a reader over one canvas ``image`` (``[H, W]`` or ``[1, H, W]``).

    The reader reads ``digits`` by teacher forcing (``BOS d_1 .. d_n``); by default its own greedy read of the
    canvas. There is one map per output token: the ``n`` digits and the token after them (EOS when the model
    stops there), titled with the token the model predicts at that step. Maps are ``[K, Hs, Ws]`` over the CNN
    feature grid, each summing to 1. ``layer`` picks the single-stream layer (default: the last)."""
    if not isinstance(model, CrossReader | SingleStreamReader):
        raise TypeError(f"model: expected a CrossReader or SingleStreamReader, received {type(model).__name__}")
    images = _one_image(image, 1)
    with _eval_mode(model):
        if digits is None:
            read = read_strings(model, images)[0]
            digits = read[: read.index(-1)] if -1 in read else read  # a non-digit token ends the string
        tgt_in, _ = targets([list(digits)], device=images.device)  # (1, T): BOS d_1 .. d_n
        out = model(images, tgt_in, return_weights=True)
    predicted = out.output.argmax(-1)[0].tolist()  # (T,)
    if isinstance(model, CrossReader):
        name = "decoder.cross"
    else:
        names = sorted(out.weights)
        if not -len(names) <= layer < len(names):
            raise ValueError(f"layer: expected an index into the {len(names)} stream layers, received {layer}")
        name = f"stream.{range(len(names))[layer]}.self"
    maps = _heads_mean(out.weights[name], 3)[0].float()  # (B, (H,) T, Hs, Ws) -> (T, Hs, Ws)
    share = maps.sum(dim=(-2, -1))  # (T,): 1 for cross-attention, the image's share for the single stream
    maps = maps / share.clamp_min(torch.finfo(maps.dtype).tiny)[:, None, None]
    if isinstance(model, CrossReader):
        title = "CrossReader: the decoder's cross-attention over the image, per output token"
        titles = [f"{t + 1}: {_token_name(token)}" for t, token in enumerate(predicted)]
    else:
        title = f"SingleStreamReader: {name}, text rows over the image keys (renormalized), per output token"
        titles = [f"{t + 1}: {_token_name(token)}, {float(s):.0%} on image" for t, (token, s) in
                  enumerate(zip(predicted, share, strict=True))]  # fmt: skip
    return ImageMaps(_gray(images), maps.cpu().numpy(), titles, title, None, share.cpu().numpy())


# -- CNN attention blocks ----------------------------------------------------------------------------------------
def _find_block(model: nn.Module, block: str | None, wanted: tuple[str, ...], what: str) -> tuple[str, VisionBlock]:
    """The block named ``block`` inside ``model``, or the last block whose mechanism is in ``wanted``."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, VisionBlock) and m.mechanism in wanted]
    if block is not None:
        modules = dict(model.named_modules())
        if (
            block not in modules
            or not isinstance(modules[block], VisionBlock)
            or modules[block].mechanism not in wanted
        ):
            names = [name for name, _ in found]
            raise KeyError(f"block: no {what} block named {block!r} in the model; {what} blocks: {names}")
        return block, modules[block]
    if not found:
        raise ValueError(f"model: expected a {what} block ({', '.join(wanted)}) inside it, found none")
    return found[-1]


def _block_input(model: nn.Module, block: nn.Module, images: Tensor) -> Tensor:
    """The tensor ``block`` receives when ``model(images)`` runs (the last call, if it is called several times)."""
    seen: list[Tensor] = []
    handle = block.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    try:
        model(images)
    finally:
        handle.remove()
    if not seen:
        raise ValueError("model: its forward pass never called the chosen block")
    return seen[-1]


PIXEL_BLOCKS = ("nonlocal", "sagan", "aa_conv", "botnet", "criss_cross")


def pixel_attention_map(
    model: nn.Module,
    image: Tensor,
    query_pixel: tuple[int, int] | None = None,
    *,
    block: str | None = None,
) -> ImageMaps:
    """One pixel's attention over the key grid of a self-attention block inside ``model`` (default: the last
    non-local / SAGAN / AA / BoTNet / criss-cross block; ``block`` names a module instead).

    ``image``: one input ``[C, H, W]`` (or ``[H, W]``), called as ``model(image[None])``; ``query_pixel`` in
    image pixels (default: the centre), mapped to the block's resolution as ``row * Hs // H``. Returns one map
    ``[1, Hk, Wk]`` (the block's key grid; a distribution for softmax blocks), with the query marked."""
    name, module = _find_block(model, block, PIXEL_BLOCKS, "pixel-attention")
    images = _one_image(image)
    height, width = images.shape[-2:]
    row, col = query_pixel if query_pixel is not None else (height // 2, width // 2)
    if not (isinstance(row, int) and isinstance(col, int) and 0 <= row < height and 0 <= col < width):
        raise ValueError(
            f"query_pixel: expected (row, col) inside the {height} x {width} image, received {query_pixel}"
        )
    with _eval_mode(model):
        x = _block_input(model, module, images)  # (1, C', Hs, Ws)
        pixel = (row * x.shape[2] // height, col * x.shape[3] // width)
        weights = module(x, return_weights=True, query_pixel=pixel).weights["pixel"]  # (1, (H,) Hk, Wk)
    maps = _heads_mean(weights, 2)[0].float()  # (Hk, Wk)
    titles = [f"query {pixel} of {x.shape[2]}x{x.shape[3]}"]
    title = f"{name} ({module.mechanism})"
    return ImageMaps(_gray(images), maps[None].cpu().numpy(), titles, title, (row, col))


def spatial_gate_map(model: nn.Module, image: Tensor, *, block: str | None = None) -> ImageMaps:
    """CBAM's spatial gate (each pixel's weight in (0, 1); not a distribution) of the last CBAM block inside
    ``model`` (or the module named ``block``) for one input ``image``: one map ``[1, Hs, Ws]``."""
    name, module = _find_block(model, block, ("cbam",), "CBAM")
    images = _one_image(image)
    with _eval_mode(model):
        x = _block_input(model, module, images)
        gate = module(x, return_weights=True).weights["spatial"]  # (1, Hs, Ws)
    titles = [f"spatial gate, {x.shape[2]}x{x.shape[3]}"]
    return ImageMaps(_gray(images), gate.float().cpu().numpy(), titles, f"{name} (cbam)")
