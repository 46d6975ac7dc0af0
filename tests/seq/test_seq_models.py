"""Shapes, attention sites, weights as data, padding invariance and input checks for every sequence model."""

from __future__ import annotations

import pytest
import torch
from seq_helpers import (
    SCORES,
    TGT_VOCAB,
    Tokens,
    classifier,
    decoder_only,
    make_batch,
    one_thread,
    pad_batch,
    rnn,
    seq2seq_models,
    transformer,
)

from attnlab.seq import (
    DecoderOnlyConfig,
    DecoderOnlyTransformer,
    EncoderConfig,
    ModelOutput,
    RNNConfig,
    RNNSeq2Seq,
    Site,
    Transformer,
    TransformerClassifier,
    TransformerConfig,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


MODELS = seq2seq_models()


def _count(sites: list[Site]) -> tuple[int, int]:
    return sum(s.kind == "self" for s in sites), sum(s.kind == "cross" for s in sites)


# -- shapes ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "build"), MODELS, ids=[m[0] for m in MODELS])
def test_seq2seq_shapes_and_weights_match_sites(name, build):
    model = build().eval()
    batch = make_batch()
    logits = model(batch)
    assert logits.shape == (3, 4, TGT_VOCAB)
    out = model(batch, return_weights=True)
    assert isinstance(out, ModelOutput)
    torch.testing.assert_close(out.logits, logits)  # asking for weights changes nothing
    sites = {s.name: s for s in model.attention_sites()}
    assert set(out.weights) == set(sites)
    for site_name, weights in out.weights.items():
        assert weights.dim() == 4 and weights.shape[:2] == (3, sites[site_name].heads), site_name


@pytest.mark.parametrize("style", ["bahdanau", "luong"])
@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("heads", [1, 2])
def test_rnn_decoder_takes_every_score_and_heads(style, score, heads):
    # dot-family scores compare raw vectors of equal size: project them (decoder 12 wide, bidirectional encoder 24);
    # the others read the raw states, with heads splitting the features (multi-head additive without projections)
    project = score in ("dot", "scaled_dot", "cosine")
    model = rnn(style, score, heads=heads, project=project).eval()
    out = model(make_batch(), return_weights=True)
    weights = out.weights["decoder.cross"]
    assert out.logits.shape == (3, 4, TGT_VOCAB) and weights.shape == (3, heads, 4, 5)
    mask = make_batch().src != 0  # (B, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, heads, 4))  # a distribution over the source
    assert (weights.masked_select(~mask[:, None, None, :].expand_as(weights)) == 0).all()  # exact zeros on padding


def test_rnn_dot_score_without_projection_on_equal_widths():
    model = rnn("luong", "dot", bidirectional=False).eval()
    assert model(make_batch()).shape == (3, 4, TGT_VOCAB)
    with pytest.raises(ValueError, match="query_dim == key_dim"):
        rnn("luong", "dot", bidirectional=True)


@pytest.mark.parametrize("score", SCORES)
def test_transformer_self_attention_takes_every_score(score):
    model = transformer(score).eval()
    out = model(make_batch(), return_weights=True)
    assert out.logits.shape == (3, 4, TGT_VOCAB)
    torch.testing.assert_close(out.weights["encoder.0.self"].sum(-1)[0], torch.ones(2, 5))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_shapes(pooling):
    model = classifier(pooling).eval()
    batch = make_batch()
    out = model(Tokens(batch.src, batch.src_lengths), return_weights=True)
    extra = 1 if pooling == "cls" else 0
    assert out.logits.shape == (3, 4)
    assert set(out.weights) == {"encoder.0.self", "encoder.1.self"}
    assert out.weights["encoder.1.self"].shape == (3, 2, 5 + extra, 5 + extra)


def test_decoder_only_weights_follow_the_prefix_mask():
    model = decoder_only().eval()
    batch = make_batch()
    weights = model(batch, return_weights=True).weights["decoder.0.self"]  # (B, H, L, L), L = S + 1 + T
    source, tail = 5 + 1, 4
    assert weights.shape == (3, 2, source + tail, source + tail)
    # source and SEP never read the target; target position t never reads later targets
    assert (weights[..., :source, source:] == 0).all()
    target_block = weights[..., source:, source:]
    assert (target_block.triu(1) == 0).all() and (target_block.diagonal(dim1=-2, dim2=-1) > 0).all()
    # the third item has one real source token: padded source positions are never read
    assert (weights[2, ..., 1:5] == 0).all()


# -- attention sites from the config, on the meta device ---------------------------------------------------------
def test_sites_of_standard_configs_on_meta():
    with torch.device("meta"):
        base = Transformer(TransformerConfig.base(32000, 32000))
        bert = TransformerClassifier(EncoderConfig.bert_base(30522, 2))
        rnnsearch = RNNSeq2Seq(RNNConfig.rnnsearch(30000, 30000))
        plain = RNNSeq2Seq(RNNConfig(src_vocab=30, tgt_vocab=30, attention=None))
        luong_mh = RNNSeq2Seq(RNNConfig(src_vocab=30, tgt_vocab=30, attention="luong", heads=4, project=True))
        lstmn = RNNSeq2Seq(RNNConfig(src_vocab=30, tgt_vocab=30, encoder="lstmn", layers=2))
        prefix_lm = DecoderOnlyTransformer(DecoderOnlyConfig(src_vocab=30, tgt_vocab=30, layers=6))
    assert all(p.is_meta for p in base.parameters()) and all(p.is_meta for p in rnnsearch.parameters())
    assert _count(base.attention_sites()) == (12, 6)
    assert _count(bert.attention_sites()) == (12, 0)
    assert _count(rnnsearch.attention_sites()) == (0, 1)
    assert _count(plain.attention_sites()) == (0, 0)
    assert _count(lstmn.attention_sites()) == (4, 1)  # 2 layers x 2 directions of intra-attention, 1 inter
    assert _count(prefix_lm.attention_sites()) == (6, 0)
    assert luong_mh.attention_sites()[0].heads == 4
    cross = base.attention_sites()[-1]
    assert cross.kind == "cross" and "encoder" in cross.keys_from and "decoder" in cross.query_from
    assert all(s.heads == 12 and s.kind == "self" for s in bert.attention_sites())
    assert rnnsearch.attention_sites()[0].score == "additive"
    assert "s_(i-1)" in rnnsearch.attention_sites()[0].query_from
    assert "prefix" in prefix_lm.attention_sites()[0].mask


def test_site_rejects_bad_kind():
    with pytest.raises(ValueError, match="kind"):
        Site("x", "both", "a", "b", 1, "dot")


# -- padding invariance ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "build"), MODELS, ids=[m[0] for m in MODELS])
def test_appending_padding_changes_no_real_output(name, build):
    model = build().double().eval()
    batch = make_batch()
    out = model(batch, return_weights=True)
    padded = model(pad_batch(batch, 3, 2), return_weights=True)
    torch.testing.assert_close(padded.logits[:, :4], out.logits, rtol=1e-10, atol=1e-10)
    for site, weights in out.weights.items():
        tq, tk = weights.shape[-2:]
        if name == "decoder-only":  # the stream [S; SEP; T] grows in the middle: compare the target rows
            continue
        torch.testing.assert_close(padded.weights[site][..., :tq, :tk], weights, rtol=1e-10, atol=1e-10)
        assert (padded.weights[site][..., :tq, tk:] == 0).all()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_padding_invariance(pooling):
    model = classifier(pooling).double().eval()
    batch = make_batch()
    logits = model(Tokens(batch.src, batch.src_lengths))
    longer = torch.nn.functional.pad(batch.src, (0, 4))
    torch.testing.assert_close(model(Tokens(longer, batch.src_lengths)), logits, rtol=1e-10, atol=1e-10)


def test_decoder_only_target_is_causal():
    model = decoder_only().eval()
    batch = make_batch()
    changed = batch.tgt_in.clone()
    changed[:, 3] = 7
    a, b = model(batch), model(type(batch)(batch.src, batch.src_lengths, changed))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3], b[:, 3])


# -- checks ------------------------------------------------------------------------------------------------------
def test_bad_configs_and_inputs_raise():
    with pytest.raises(ValueError, match="heads"):
        TransformerConfig(src_vocab=5, tgt_vocab=5, dim=10, heads=3)
    with pytest.raises(KeyError, match="available"):
        TransformerConfig(src_vocab=5, tgt_vocab=5, score="nope")
    with pytest.raises(ValueError, match="cell"):
        RNNConfig(src_vocab=5, tgt_vocab=5, cell="rnn")
    with pytest.raises(ValueError, match="attention"):
        RNNConfig(src_vocab=5, tgt_vocab=5, attention="global")
    with pytest.raises(ValueError, match="pooling"):
        EncoderConfig(vocab=5, num_classes=2, pooling="max")
    model = rnn()
    batch = make_batch()
    with pytest.raises(ValueError, match=r"src_lengths must lie in \[1, 5\]"):
        model(type(batch)(batch.src, torch.tensor([5, 3, 0]), batch.tgt_in))
    with pytest.raises(TypeError, match="src, src_lengths and tgt_in"):
        model(Tokens(batch.src, batch.src_lengths))
    with pytest.raises(TypeError, match="integer tensor"):
        transformer()(type(batch)(batch.src.float(), batch.src_lengths, batch.tgt_in))
    with pytest.raises(ValueError, match="learned positions were built with max_len=8"):
        transformer(positions="learned", max_len=8)(make_batch(tgt_len=9))


def test_transformer_all_padding_item_gives_finite_outputs():
    model = transformer().eval()
    batch = make_batch()
    empty = type(batch)(batch.src, torch.tensor([5, 3, 0]), batch.tgt_in)
    assert torch.isfinite(model(empty)).all()
