"""Vision blocks: shape, gradient and float64 reference at 16x16 and 17x23; gates; fused path; memory refusal."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import vision_reference as ref

import attnlab.vision as vision
from attnlab.vision import MemoryLimitError, get_block

SIZES = [(16, 16), (17, 23)]
CHANNELS = 16
# Small settings so the float64 references stay fast; max_offset=8 exercises clipped relative positions.
OPTIONS = {
    "se": {"reduction": 4},
    "eca": {},
    "cbam": {"reduction": 4},
    "nonlocal": {},
    "sagan": {},
    "aa_conv": {"heads": 2, "max_offset": 8},
    "sasa": {"heads": 2, "kernel_size": 5},
    "botnet": {"heads": 2, "max_offset": 8},
    "criss_cross": {},
}
BLOCKS = sorted(OPTIONS)
PAIRWISE = ["embedded_gaussian", "gaussian", "dot", "concatenation"]
# name of the returned query-row map -> how the reference's full matrix is indexed
ROW_MAP = {"nonlocal": "pixel", "sagan": "pixel", "aa_conv": "pixel", "botnet": "pixel", "criss_cross": "pixel"}


def wake(block: torch.nn.Module) -> torch.nn.Module:
    """Give every zero-initialized parameter (gates, BN scales, biases) random values, so nothing is trivially 0."""
    with torch.no_grad():
        for param in block.parameters():
            if not param.any():
                param.normal_(0.0, 0.5)
    return block


def build(name: str, dtype=torch.float64, **extra) -> torch.nn.Module:
    return wake(get_block(name, CHANNELS, **{**OPTIONS[name], **extra}).to(dtype))


def test_registry_has_every_required_name():
    required = {"se", "eca", "cbam", "nonlocal", "sagan", "aa_conv", "sasa", "botnet", "criss_cross", "vit"}
    assert required <= set(vision.available_blocks())
    with pytest.raises(KeyError, match="available: aa_conv, botnet"):
        get_block("non_local", 16)
    with pytest.raises(TypeError):
        get_block("se", 16, reducton=4)  # a misspelt option is not swallowed


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", BLOCKS)
def test_shape_and_finite_gradient(name, size):
    block = build(name, torch.float32)
    x = torch.randn(2, CHANNELS, *size, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for param_name, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", BLOCKS)
def test_matches_float64_reference(name, size):
    block = build(name)
    x = torch.randn(2, CHANNELS, *size, dtype=torch.float64)
    pixel = (size[0] - 3, 1)
    out = block(x, return_weights=True, query_pixel=pixel)
    want, attention = ref.REFERENCES[name](block, x)
    torch.testing.assert_close(out.output, want, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(block(x), want, rtol=1e-7, atol=1e-7)  # the training path, no weights
    p = pixel[0] * size[1] + pixel[1]
    if name in ("nonlocal", "sagan"):
        torch.testing.assert_close(out.weights["pixel"].flatten(1), attention[:, p], rtol=1e-7, atol=1e-7)
    elif name in ("aa_conv", "botnet", "criss_cross"):  # per head, or per recurrence
        torch.testing.assert_close(out.weights["pixel"].flatten(2), attention[:, :, p], rtol=1e-7, atol=1e-7)
    elif name == "sasa":
        k, r = block.kernel_size, block.kernel_size // 2
        window = out.weights["window"]  # (B, H, k, k)
        full = attention[:, :, p].reshape(2, block.heads, *size)
        for dy in range(k):
            for dx in range(k):
                y, x_ = pixel[0] + dy - r, pixel[1] + dx - r
                expected = full[:, :, y, x_] if 0 <= y < size[0] and 0 <= x_ < size[1] else 0.0 * window[:, :, 0, 0]
                torch.testing.assert_close(window[:, :, dy, dx], expected, rtol=1e-7, atol=1e-7)
    elif name == "cbam":
        assert out.weights["spatial"].shape == (2, *size)
        assert ((out.weights["spatial"] > 0) & (out.weights["spatial"] < 1)).all()


@pytest.mark.parametrize("kv_stride", [1, 2])
@pytest.mark.parametrize("pairwise", PAIRWISE)
def test_nonlocal_every_pairwise_matches_reference(pairwise, kv_stride):
    for size in SIZES:
        block = build("nonlocal", pairwise=pairwise, kv_stride=kv_stride)
        x = torch.randn(2, CHANNELS, *size, dtype=torch.float64)
        out = block(x, return_weights=True, query_pixel=(1, 2))
        want, attention = ref.non_local(block, x)
        torch.testing.assert_close(out.output, want, rtol=1e-7, atol=1e-7)
        keys = (-(-size[0] // kv_stride), -(-size[1] // kv_stride))
        assert out.weights["pixel"].shape == (2, *keys)
        torch.testing.assert_close(out.weights["pixel"].flatten(1), attention[:, size[1] + 2], rtol=1e-7, atol=1e-7)


def test_nonlocal_scale_matches_reference_and_is_refused_for_dot():
    block = build("nonlocal", scale=CHANNELS**-0.5)
    x = torch.randn(2, CHANNELS, 17, 23, dtype=torch.float64)
    torch.testing.assert_close(block(x), ref.non_local(block, x)[0], rtol=1e-7, atol=1e-7)
    with pytest.raises(ValueError, match="scale"):
        get_block("nonlocal", 16, pairwise="dot", scale=0.5)
    with pytest.raises(KeyError, match="embedded_gaussian"):
        get_block("nonlocal", 16, pairwise="embedded")


@pytest.mark.parametrize("kv_stride", [1, 2])
def test_sagan_matches_reference_with_key_value_pooling(kv_stride):
    block = build("sagan", kv_stride=kv_stride)
    x = torch.randn(2, CHANNELS, 17, 23, dtype=torch.float64)
    out = block(x, return_weights=True)
    want, attention = ref.sagan(block, x)
    torch.testing.assert_close(out.output, want, rtol=1e-7, atol=1e-7)
    assert out.weights["pixel"].shape == (2, *((17, 23) if kv_stride == 1 else (9, 12)))
    torch.testing.assert_close(out.weights["pixel"].flatten(1), attention[:, 8 * 23 + 11], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("kv_stride", [1, 2])
def test_sagan_is_exactly_the_identity_at_init(kv_stride):
    block = get_block("sagan", 32, kv_stride=kv_stride)
    for size in SIZES:
        x = torch.randn(2, 32, *size)
        assert torch.equal(block(x), x)
    y = block(x)
    y.sum().backward()  # gamma still learns
    assert block.gamma.grad is not None and block.gamma.grad != 0


@pytest.mark.parametrize(
    ("name", "options"), [("nonlocal", {}), ("nonlocal", {"pairwise": "dot"}), ("criss_cross", {})]
)
def test_zero_initialized_gates_make_the_identity(name, options):
    block = get_block(name, 32, **options)
    x = torch.randn(2, 32, 17, 23)
    assert torch.equal(block(x), x)


def test_botnet_starts_as_relu_of_its_input():
    block = get_block("botnet", 32)
    x = torch.randn(2, 32, 17, 23)
    assert torch.equal(block(x), torch.relu(x))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("nonlocal", {}),
        ("nonlocal", {"pairwise": "gaussian", "kv_stride": 2}),
        ("sagan", {}),
        ("sagan", {"kv_stride": 2}),
    ],
)
def test_global_blocks_take_the_fused_kernel_with_equal_widths(name, options, monkeypatch):
    """SDPA's flash kernel needs no mask and equal q/k/v widths; otherwise it silently goes quadratic."""
    calls = []
    real = F.scaled_dot_product_attention

    def spy(query, key, value, **kw):
        calls.append((query.shape, key.shape, value.shape, kw.get("attn_mask")))
        return real(query, key, value, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    block = get_block(name, 32, **options)
    x = torch.randn(2, 32, 17, 23, requires_grad=True)
    block(x).sum().backward()
    assert len(calls) == 1
    q_shape, k_shape, v_shape, mask = calls[0]
    assert mask is None
    assert q_shape[-1] == k_shape[-1] == v_shape[-1]
    assert q_shape[-2] == 17 * 23 and k_shape[-2] == (17 * 23 if "kv_stride" not in options else 9 * 12)


def test_nonlocal_concatenation_refuses_above_its_memory_limit():
    block = get_block("nonlocal", 64, pairwise="concatenation")
    x = torch.randn(2, 64, 96, 96)
    with pytest.raises(MemoryLimitError, match=r"\[2, 9216, 9216\].*memory_limit=1.00 GiB.*embedded_gaussian"):
        block(x)
    small = get_block("nonlocal", 8, pairwise="concatenation", memory_limit=10_000)
    with pytest.raises(MemoryLimitError, match="nonlocal"):
        small(torch.randn(1, 8, 8, 8))
    unchecked = get_block("nonlocal", 8, pairwise="concatenation", memory_limit=None)
    assert unchecked(torch.randn(1, 8, 8, 8)).shape == (1, 8, 8, 8)
    with torch.no_grad():  # inference needs fewer copies: the same map passes a limit training would not
        get_block("nonlocal", 8, pairwise="concatenation", memory_limit=3 * 64 * 64 * 4)(torch.randn(1, 8, 8, 8))


@pytest.mark.parametrize("name", ["aa_conv", "botnet"])
def test_relative_blocks_refuse_above_their_memory_limit(name):
    block = get_block(name, 16, heads=2, memory_limit=100_000)
    assert block(torch.randn(1, 16, 5, 7)).shape == (1, 16, 5, 7)
    with pytest.raises(MemoryLimitError, match=rf"{name}: relative logits \[B, H, N, N\] \[1, 2, 400, 400\]"):
        block(torch.randn(1, 16, 20, 20))


def test_embedded_gaussian_nonlocal_is_not_refused_at_high_resolution():
    block = get_block("nonlocal", 8, memory_limit=1000)  # a tiny limit: the fused path never consults it
    with torch.no_grad():
        assert block(torch.randn(1, 8, 64, 64)).shape == (1, 8, 64, 64)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("se", {"reduction": 8}),
        ("cbam", {"reduction": 8}),
        ("nonlocal", {"reduction": 8}),
        ("sagan", {"reduction": 8}),
        ("sagan", {"value_reduction": 8}),
        ("aa_conv", {"reduction": 8}),
        ("botnet", {"reduction": 8}),
        ("criss_cross", {"reduction": 8}),
    ],
)
def test_reduction_below_one_channel_names_both_numbers(name, options):
    with pytest.raises(ValueError, match=r"channels=4, \w*reduction=8"):
        get_block(name, 4, **options)


def test_bad_inputs_name_the_argument():
    block = get_block("se", 16)
    with pytest.raises(ValueError, match=r"C = 16; received shape \(2, 8, 5, 5\)"):
        block(torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match="received shape"):
        block(torch.randn(16, 5, 5))
    with pytest.raises(TypeError, match="floating-point"):
        block(torch.ones(2, 16, 5, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="query_pixel must lie"):
        get_block("sagan", 16)(torch.randn(1, 16, 5, 5), return_weights=True, query_pixel=(5, 0))
    with pytest.raises(ValueError, match="return_weights=True"):
        block(torch.randn(1, 16, 5, 5), query_pixel=(0, 0))
    with pytest.raises(ValueError, match="heads"):
        get_block("sasa", 16, heads=3)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        get_block("sasa", 16, kernel_size=4)
    with pytest.raises(ValueError, match="channels must be a positive int"):
        get_block("eca", 0)


@pytest.mark.parametrize("name", ["nonlocal", "sagan", "aa_conv", "botnet", "sasa", "criss_cross"])
def test_softmax_weights_are_distributions(name):
    block = build(name, torch.float32)
    out = block(torch.randn(2, CHANNELS, 17, 23), return_weights=True, query_pixel=(0, 22))
    weights = next(iter(out.weights.values()))
    total = weights.flatten(-2).sum(-1)  # over the key grid (or window)
    torch.testing.assert_close(total, torch.ones_like(total))
    assert (weights >= 0).all()


def test_sasa_is_local_and_criss_cross_reaches_everything_in_two_passes():
    x = torch.randn(1, CHANNELS, 17, 23, dtype=torch.float64)
    far = x.clone()
    far[:, :, 0, 0] += 5.0
    sasa = build("sasa")  # 5x5 windows: pixel (10, 10) never sees (0, 0)
    assert torch.equal(sasa(x)[:, :, 10, 10], sasa(far)[:, :, 10, 10])
    assert not torch.equal(sasa(x)[:, :, 1, 1], sasa(far)[:, :, 1, 1])
    one = build("criss_cross", recurrence=1)
    assert torch.equal(one(x)[:, :, 10, 10], one(far)[:, :, 10, 10])  # not on its row or column
    two = build("criss_cross", recurrence=2)
    assert not torch.allclose(two(x)[:, :, 10, 10], two(far)[:, :, 10, 10])


@pytest.mark.parametrize("name", ["aa_conv", "botnet"])
def test_relative_positions_work_beyond_max_offset_and_at_any_size(name):
    block = build(name, torch.float64, max_offset=3)
    for size in [(1, 1), (1, 9), (40, 3)]:
        x = torch.randn(2, CHANNELS, *size, dtype=torch.float64)
        torch.testing.assert_close(block(x), ref.REFERENCES[name](block, x)[0], rtol=1e-7, atol=1e-7)


def test_fully_attentional_aa_conv_matches_reference():
    block = build("aa_conv", reduction=1)  # all channels from attention, no convolution
    assert block.conv is None
    x = torch.randn(2, CHANNELS, 17, 23, dtype=torch.float64)
    torch.testing.assert_close(block(x), ref.aa_conv(block, x)[0], rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("name", BLOCKS)
def test_gradcheck_with_respect_to_the_input(name):
    block = build(name)
    x = torch.randn(2, CHANNELS, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: block(t), (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_attention_sites_describe_each_block():
    kinds = {name: [site.kind for site in get_block(name, 16, **OPTIONS[name]).attention_sites()] for name in BLOCKS}
    assert kinds["cbam"] == ["channel", "spatial"]
    assert kinds["se"] == kinds["eca"] == ["channel"]
    for name in ("nonlocal", "sagan", "aa_conv", "sasa", "botnet", "criss_cross"):
        assert kinds[name] == ["self"]
    site = get_block("sagan", 16, kv_stride=2).attention_sites("attention.stage3.0", "the stage3 output")[0]
    assert site.name == "attention.stage3.0" and site.mechanism == "sagan"
    assert "max-pooled 2x2" in site.key and "the stage3 output" in site.query
