"""Maps over images for figures: one distribution per reader output token; a block's pixel map; CBAM's gate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.data import digit_strings
from attnlab.experiments.reader import (
    CrossReaderConfig,
    CrossReaderModel,
    SingleStreamConfig,
    SingleStreamReaderModel,
    read_strings,
)
from attnlab.lab.image_maps import ImageMaps, pixel_attention_map, reader_token_maps, spatial_gate_map
from attnlab.vision.backbone import AttentionResNet
from attnlab.vision.reader import CrossReader

SMALL = {"dim": 16, "widths": (8, 16)}
READERS = {
    "cross": lambda: CrossReaderModel(CrossReaderConfig(**SMALL)),
    "cross-2heads": lambda: CrossReaderModel(CrossReaderConfig(**SMALL, heads=2, score="additive")),
    "single": lambda: SingleStreamReaderModel(SingleStreamConfig(**SMALL)),
    "single-3layers": lambda: SingleStreamReaderModel(SingleStreamConfig(**SMALL, layers=3, heads=1)),
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def canvases():
    return digit_strings(2, "test", seed=3)


def _awake(model: torch.nn.Module) -> torch.nn.Module:
    """Random values for the zero-initialized parameters (modality embeddings, SAGAN's gate)."""
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("name", list(READERS))
def test_one_map_per_output_token_each_a_distribution_over_the_image(name, canvases, tmp_path):
    model = _awake(READERS[name]()).train()
    label = canvases.labels[0]
    maps = reader_token_maps(model, canvases.images[0], label)
    assert model.training  # the mode is given back
    assert isinstance(maps, ImageMaps)
    assert maps.image.shape == (12, 64) and np.array_equal(maps.image, canvases.images[0, 0].numpy())
    assert maps.maps.shape == (len(label) + 1, 6, 32)  # the digits and the token after them, on the 6 x 32 grid
    assert len(maps.titles) == len(label) + 1
    assert (maps.maps >= 0).all()
    np.testing.assert_allclose(maps.maps.sum(axis=(1, 2)), 1.0, atol=1e-5)
    share = maps.image_share
    if isinstance(model, CrossReader):
        np.testing.assert_allclose(share, 1.0, atol=1e-5)
    else:  # text queries also read earlier text tokens: the first one reads only BOS besides the image
        assert ((share > 0) & (share < 1)).all()
    assert maps.draw(tmp_path / f"{name}.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["cross", "single"])
def test_default_tokens_are_the_models_own_read(name, canvases):
    model = _awake(READERS[name]()).eval()
    read = read_strings(model, canvases.images[1:2])[0]
    read = read[: read.index(-1)] if -1 in read else read
    maps = reader_token_maps(model, canvases.images[1])
    assert maps.maps.shape[0] == len(read) + 1
    for title, digit in zip(maps.titles, read, strict=False):  # each title names the token predicted there
        assert title.split(":")[1].strip().startswith(str(digit))


def test_single_stream_layer_choice_and_errors(canvases):
    model = _awake(READERS["single-3layers"]())
    first = reader_token_maps(model, canvases.images[0], [1, 2], layer=0)
    last = reader_token_maps(model, canvases.images[0], [1, 2])
    assert "stream.0.self" in first.title and "stream.2.self" in last.title
    assert not np.allclose(first.maps, last.maps)
    with pytest.raises(ValueError, match="layer: expected an index into the 3 stream layers"):
        reader_token_maps(model, canvases.images[0], [1, 2], layer=3)
    with pytest.raises(TypeError, match="model: expected a CrossReader or SingleStreamReader"):
        reader_token_maps(torch.nn.Linear(2, 2), canvases.images[0])
    with pytest.raises(ValueError, match=r"image: expected \[H, W\]"):
        reader_token_maps(model, canvases.images[:2])
    with pytest.raises(ValueError, match="labels"):
        reader_token_maps(model, canvases.images[0], [12])


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    net = AttentionResNet(blocks=[("stage2", "cbam"), ("stage2", "sagan", {"kv_stride": 2}), ("stage3", "nonlocal")])
    return _awake(net)


def test_pixel_map_of_a_nonlocal_or_sagan_block_inside_a_backbone(backbone, tmp_path):
    image = torch.rand(1, 32, 32)
    last = pixel_attention_map(backbone, image, (5, 20))  # default: the last pixel-attention block
    assert "nonlocal" in last.title and last.query == (5, 20)
    assert last.maps.shape == (1, 8, 8)  # stage3 runs at 1/4 resolution
    np.testing.assert_allclose(last.maps.sum(), 1.0, atol=1e-5)
    # the same map as the backbone's own weight-returning path (query mapped to the block's grid the same way)
    reference = backbone.eval()(image[None], return_weights=True, query_pixel=(5, 20)).weights["stage3.0.pixel"]
    np.testing.assert_allclose(last.maps, reference.detach().numpy(), atol=1e-6)
    sagan = pixel_attention_map(backbone, image, (5, 20), block="attention.stage2.1")
    assert "sagan" in sagan.title and sagan.maps.shape == (1, 8, 8)  # 16 x 16 keys pooled by kv_stride 2
    np.testing.assert_allclose(sagan.maps.sum(), 1.0, atol=1e-5)
    assert sagan.draw(tmp_path / "sagan.png").stat().st_size > 0
    with pytest.raises(KeyError, match=r"block: no pixel-attention block named 'attention\.stage2\.0'"):
        pixel_attention_map(backbone, image, block="attention.stage2.0")  # that one is CBAM
    with pytest.raises(ValueError, match="query_pixel: expected"):
        pixel_attention_map(backbone, image, (32, 0))
    with pytest.raises(ValueError, match="model: expected a pixel-attention block"):
        pixel_attention_map(AttentionResNet(), image)


def test_cbam_spatial_gate_inside_a_backbone(backbone, tmp_path):
    image = torch.rand(1, 32, 32)
    gate = spatial_gate_map(backbone, image)
    assert gate.maps.shape == (1, 16, 16) and "cbam" in gate.title
    assert ((gate.maps > 0) & (gate.maps < 1)).all()
    reference = backbone.eval()(image[None], return_weights=True).weights["stage2.0.spatial"]
    np.testing.assert_allclose(gate.maps, reference.detach().numpy(), atol=1e-6)
    assert gate.draw(tmp_path / "cbam.png").stat().st_size > 0
