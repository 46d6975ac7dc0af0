"""Migration both ways between attnlab's attention modules and ``torch.nn.MultiheadAttention``, the tensor-first
call convention, the one projection layout (and the files written before it), and mismatched inputs."""

from __future__ import annotations

import pytest
import torch

from attnlab import Attended, CrossAttention, SelfAttention, masks
from attnlab.attention import upgrade_state_dict


def _randomized(module: torch.nn.Module) -> torch.nn.Module:
    """Every parameter random (MHA initialises its biases to 0, which would hide a bias mix-up)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_()
    return module


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_to_torch_reproduces_it_and_round_trips_exactly(bias, causal):
    ours = _randomized(SelfAttention(8, 2, causal=causal, bias=bias)).eval()
    x = torch.randn(3, 5, 8)
    padding = masks.padding([5, 2, 4], 5)  # (B, 1, T), True = may attend
    mha = ours.to_torch()
    assert isinstance(mha, torch.nn.MultiheadAttention) and mha.batch_first and not mha.training
    attn_mask = ~masks.causal(5) if causal else None  # MHA: True = masked
    want, _ = mha(x, x, x, key_padding_mask=~padding[:, 0], attn_mask=attn_mask, need_weights=False)
    got = ours(x, mask=padding)
    real = padding[:, 0]  # padded query rows differ by design: ours zeroes padded inputs before projecting
    torch.testing.assert_close(got[real], want[real], rtol=1.3e-6, atol=1e-5)
    back = SelfAttention.from_torch(mha, causal=causal)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


@pytest.mark.parametrize("kdim", [8, 5])
def test_cross_attention_to_torch_reproduces_it_with_other_key_widths(kdim):
    ours = _randomized(CrossAttention(8, kdim, 2)).eval()
    x, memory = torch.randn(3, 4, 8), torch.randn(3, 6, kdim)
    padding = masks.padding([6, 1, 3], 6)
    mha = ours.to_torch()
    assert mha._qkv_same_embed_dim == (kdim == 8)
    want, want_weights = mha(x, memory, memory, key_padding_mask=~padding[:, 0], average_attn_weights=False)
    got = ours(x, memory, mask=padding, return_weights=True)
    torch.testing.assert_close(got.context, want, rtol=1.3e-6, atol=1e-5)
    torch.testing.assert_close(got.weights, want_weights, rtol=1.3e-6, atol=1e-5)
    back = CrossAttention.from_torch(mha)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


@pytest.mark.parametrize("kdim", [None, 5])
def test_multihead_attention_state_dicts_load_directly(kdim):
    mha = _randomized(torch.nn.MultiheadAttention(8, 2, kdim=kdim, vdim=kdim, batch_first=True)).eval()
    ours = CrossAttention(8, kdim or 8, 2).eval()
    ours.load_state_dict(mha.state_dict())  # in_proj_weight / q_proj_weight ... renamed on load
    x, memory = torch.randn(2, 3, 8), torch.randn(2, 4, kdim or 8)
    want, _ = mha(x, memory, memory, need_weights=False)
    torch.testing.assert_close(ours(x, memory), want, rtol=1.3e-6, atol=1e-5)


def test_files_from_the_former_fused_layout_load():
    ours = _randomized(SelfAttention(8, 2)).eval()
    old = {  # the layout before one layout: one fused [W_q; W_k; W_v] for equal widths
        "in_proj.weight": torch.cat((ours.q_proj.weight, ours.kv_proj.weight)),
        "in_proj.bias": torch.cat((ours.q_proj.bias, ours.kv_proj.bias)),
        "out_proj.weight": ours.out_proj.weight,
        "out_proj.bias": ours.out_proj.bias,
    }
    fresh = SelfAttention(8, 2).eval()
    fresh.load_state_dict({k: v.clone() for k, v in old.items()})
    x = torch.randn(2, 5, 8)
    assert torch.equal(fresh(x), ours(x))
    nested = torch.nn.ModuleDict({"layer": SelfAttention(8, 2)})
    upgraded = upgrade_state_dict(nested, {f"layer.{k}": v for k, v in old.items()})
    assert sorted(upgraded) == sorted(f"layer.{k}" for k in ours.state_dict())


def test_to_torch_refuses_what_multihead_attention_cannot_express():
    with pytest.raises(ValueError, match="scaled dot-product scores only; this module's score is Additive"):
        SelfAttention(8, 2, "additive").to_torch()
    with pytest.raises(ValueError, match="project=False"):
        CrossAttention(8, 8, 2, project=False).to_torch()
    with pytest.raises(ValueError, match=r"heads x head_dim == dim; received 2 x 3 != 8"):
        SelfAttention(8, 2, head_dim=3).to_torch()
    with pytest.raises(ValueError, match="scaled dot-product scores only; this module's score is Dot"):
        SelfAttention(8, 2, "dot").to_torch()


def test_modules_return_tensors_and_drop_into_sequential():
    block = torch.nn.Sequential(SelfAttention(16, 4), torch.nn.LayerNorm(16))
    x = torch.randn(2, 7, 16)
    out = block(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7, 16)
    attended = block[0](x, return_weights=True)
    assert isinstance(attended, Attended) and attended.weights.shape == (2, 4, 7, 7)
    torch.testing.assert_close(attended.context, block[0](x))  # dense path (weights) vs fused: rounding only


def test_mismatched_query_and_context_name_both():
    attn = CrossAttention(8, 6, 2)
    x = torch.randn(2, 3, 8)
    with pytest.raises(TypeError, match=r"context dtype must match x's torch.float32; received torch.float64"):
        attn(x, torch.randn(2, 4, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"context must be on x's device cpu; received meta"):
        attn(x, torch.randn(2, 4, 6, device="meta"))
    memory = attn.double().precompute(torch.randn(2, 4, 6, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"the Memory's values dtype must match x's torch.float32"):
        attn.float()(x, memory)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts both: mixed dtypes are expected there
        assert attn(x, torch.randn(2, 4, 6, dtype=torch.bfloat16)).shape == (2, 3, 8)
