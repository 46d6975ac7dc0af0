"""ViT and the ResNet-style backbone: odd sizes, float64 reference, one training step per block, attention sites."""

from __future__ import annotations

import pytest
import torch
import vision_reference as ref

from attnlab.vision import AttentionResNet, VisionTransformer, available_blocks, get_block

BLOCK_OPTIONS = {"aa_conv": {"heads": 2}, "botnet": {"heads": 2}, "sasa": {"heads": 2, "kernel_size": 3}}


def _vit(**kw):
    options = {"dim": 16, "depth": 2, "heads": 2, "patch_size": 4, "image_size": 16, **kw}
    return get_block("vit", 3, **options)


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (3, 5)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("class_token", [True, False])
def test_vit_encoder_matches_float64_reference_at_any_size(size, class_token):
    encoder = _vit(class_token=class_token).double()
    with torch.no_grad():
        if class_token:
            encoder.class_token.normal_()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    out = encoder(x, return_weights=True)
    want, attentions = ref.vit(encoder, x)
    tokens = -(-size[0] // 4) * -(-size[1] // 4) + int(class_token)
    assert out.output.shape == (2, 16)
    torch.testing.assert_close(out.output, want, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(encoder(x), want, rtol=1e-7, atol=1e-7)  # fused path
    assert set(out.weights) == {"layer0", "layer1"}
    for i, attention in enumerate(attentions):
        assert out.weights[f"layer{i}"].shape == (2, 2, tokens, tokens)
        torch.testing.assert_close(out.weights[f"layer{i}"], attention, rtol=1e-7, atol=1e-7)


def test_vision_transformer_classifies_odd_sizes_and_lists_its_sites():
    model = VisionTransformer(in_channels=1, num_classes=10, dim=16, depth=3, heads=2, patch_size=4, image_size=32)
    for size in [(17, 23), (32, 32), (1, 1), (64, 48)]:
        logits = model(torch.randn(2, 1, *size))
        assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    sites = model.attention_sites()
    assert [s.name for s in sites] == [f"encoder.layers.{i}.attention" for i in range(3)]
    assert {s.kind for s in sites} == {"self"}
    out = model(torch.randn(2, 1, 17, 23), return_weights=True)
    assert out.output.shape == (2, 10) and out.weights["layer2"].shape == (2, 2, 1 + 5 * 6, 1 + 5 * 6)


def _train_one_step(model: torch.nn.Module, size=(17, 23)) -> None:
    x, labels = torch.randn(4, 1, *size), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), labels)
    optimizer.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert torch.isfinite(torch.nn.functional.cross_entropy(model(x), labels))


@pytest.mark.parametrize("name", [n for n in available_blocks() if n != "vit"])
def test_backbone_with_each_block_trains_one_step(name):
    model = AttentionResNet(widths=(8, 16, 32), blocks={"stage3": (name, BLOCK_OPTIONS.get(name, {}))})
    assert len(model.attention["stage3"]) == 1
    _train_one_step(model)


def test_vision_transformer_trains_one_step():
    _train_one_step(VisionTransformer(in_channels=1, num_classes=4, dim=16, depth=2, heads=2, image_size=16))


def test_backbone_list_form_several_stages_and_weights():
    model = AttentionResNet(
        widths=(8, 16, 32),
        blocks=[
            ("stage1", "cbam", {"reduction": 4}),
            ("stage2", "sagan", {"kv_stride": 2}),
            ("stage3", "nonlocal", {"pairwise": "dot"}),
            ("stage3", "criss_cross"),
        ],
    )
    x = torch.randn(2, 1, 17, 23)
    out = model(x, return_weights=True, query_pixel=(16, 0))
    assert out.output.shape == (2, 10)
    assert set(out.weights) == {
        "stage1.0.channel",
        "stage1.0.spatial",
        "stage2.0.pixel",
        "stage3.0.pixel",
        "stage3.1.pixel",
    }
    assert out.weights["stage1.0.spatial"].shape == (2, 17, 23)
    assert out.weights["stage2.0.pixel"].shape == (2, 5, 6)  # 9x12 map, keys pooled 2x2
    assert out.weights["stage3.1.pixel"].shape == (2, 2, 5, 6)
    # the query pixel (16, 0) of the input is (4, 0) on the 5x6 map of stage3: its column and row carry weight
    cross = out.weights["stage3.1.pixel"][:, 0]
    assert (cross[:, 4, :] > 0).all() and (cross[:, :, 0] > 0).all() and cross[:, :4, 1:].abs().sum() == 0
    torch.testing.assert_close(model(x), out.output)  # asking for weights changes nothing


def test_backbone_without_blocks_is_a_plain_cnn():
    model = AttentionResNet()
    assert model.attention_sites() == []
    assert model(torch.randn(2, 1, 17, 23)).shape == (2, 10)


def test_models_build_on_the_meta_device_and_list_sites():
    with torch.device("meta"):
        model = AttentionResNet(blocks={"stage2": "cbam", "stage3": ("nonlocal", {"kv_stride": 2})})
        vit = VisionTransformer(depth=6)
    assert all(p.is_meta for p in model.parameters())
    sites = model.attention_sites()
    assert [(s.name, s.mechanism, s.kind) for s in sites] == [
        ("attention.stage2.0", "cbam", "channel"),
        ("attention.stage2.0", "cbam", "spatial"),
        ("attention.stage3.0", "nonlocal", "self"),
    ]
    assert "stage3 output (128 channels, 1/4 resolution)" in sites[2].query
    assert "max-pooled 2x2" in sites[2].key
    assert len(vit.attention_sites()) == 6


def test_backbone_rejects_unknown_stages_and_blocks():
    with pytest.raises(ValueError, match="stage must be one of stem, stage1, stage2, stage3; received 'stage4'"):
        AttentionResNet(blocks={"stage4": "se"})
    with pytest.raises(KeyError, match="unknown block 'senet'"):
        AttentionResNet(blocks={"stage3": "senet"})
    with pytest.raises(TypeError, match="each block must be"):
        AttentionResNet(blocks=[("stage3",)])
