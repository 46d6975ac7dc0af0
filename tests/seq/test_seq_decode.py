"""Decoding: incremental == teacher forcing, beam 1 == greedy, memory and caches used as promised."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from seq_helpers import BOS, EOS, PAD, SCORES, decoder_only, make_batch, one_thread, rnn, seq2seq_models, transformer

from attnlab.seq import Decodable, beam_search, greedy


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


MODELS = seq2seq_models()


def _stepwise_log_probs(model, batch) -> torch.Tensor:
    """Feed ``tgt_in`` one token at a time through the decoding protocol: ``[B, T, V]`` log-probabilities."""
    with torch.no_grad():
        state = model.encode(batch.src, batch.src_lengths)
        steps = []
        for t in range(batch.tgt_in.shape[1]):
            log_probs, state = model.step(state, batch.tgt_in[:, t])
            steps.append(log_probs)
    return torch.stack(steps, dim=1)


@pytest.mark.parametrize(("name", "build"), MODELS, ids=[m[0] for m in MODELS])
def test_step_by_step_equals_teacher_forcing(name, build):
    model = build().double().eval()
    assert isinstance(model, Decodable)
    batch = make_batch(tgt_len=6)
    with torch.no_grad():
        full = F.log_softmax(model(batch), dim=-1)
    torch.testing.assert_close(_stepwise_log_probs(model, batch), full, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("score", SCORES)
def test_transformer_cache_matches_full_pass_for_every_score(score):
    model = transformer(score, decoder_layers=1, encoder_layers=1).double().eval()
    batch = make_batch(tgt_len=5)
    with torch.no_grad():
        full = F.log_softmax(model(batch), dim=-1)
    torch.testing.assert_close(_stepwise_log_probs(model, batch), full, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("score", ["additive", "location"])
def test_decoder_only_cache_matches_full_pass(score):
    model = decoder_only(score, positions="learned").double().eval()
    batch = make_batch(tgt_len=5)
    with torch.no_grad():
        full = F.log_softmax(model(batch), dim=-1)
    torch.testing.assert_close(_stepwise_log_probs(model, batch), full, rtol=1e-9, atol=1e-9)


def test_incremental_transformer_projects_one_token_per_step():
    model = transformer().eval()
    batch = make_batch()
    widths = []
    layer = model.decoder_layers[0]
    hook = layer.self_attn.q_proj.register_forward_hook(lambda m, args, out: widths.append(args[0].shape[1]))
    try:
        state = model.encode(batch.src, batch.src_lengths)
        with torch.no_grad():
            for _ in range(5):
                _, state = model.step(state, torch.full((3,), BOS))
    finally:
        hook.remove()
    assert widths == [1] * 5  # each step projects only its new token
    assert [cache.length for cache in state.caches] == [5, 5]


@pytest.mark.parametrize("style", ["bahdanau", "luong"])
def test_rnn_keys_are_prepared_once_per_sequence(style, monkeypatch):
    model = rnn(style).eval()
    calls = []
    score = model.decoder.attention.score
    original = score.prepare_key
    monkeypatch.setattr(score, "prepare_key", lambda key: calls.append(key.shape) or original(key))
    model(make_batch(tgt_len=7))
    assert len(calls) == 1  # 7 decoder steps, one key projection
    greedy(model, make_batch().src, make_batch().src_lengths, bos_id=BOS, eos_id=EOS, max_len=6)
    assert len(calls) == 2


@pytest.mark.parametrize(("name", "build"), MODELS, ids=[m[0] for m in MODELS])
def test_beam_of_one_is_greedy(name, build):
    model = build().eval()
    batch = make_batch()
    a = greedy(model, batch.src, batch.src_lengths, bos_id=BOS, eos_id=EOS, max_len=8)
    b = beam_search(model, batch.src, batch.src_lengths, bos_id=BOS, eos_id=EOS, beam_size=1, max_len=8)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.lengths, b.lengths)
    torch.testing.assert_close(a.log_probs, b.log_probs)


@pytest.mark.parametrize("build", [lambda: rnn("luong", "general"), transformer, decoder_only])
@pytest.mark.parametrize("beam_size", [1, 3])
def test_decoded_scores_are_the_models_log_probabilities(build, beam_size):
    """Rescore each returned hypothesis by teacher forcing: the reported log-probability must match."""
    model = build().double().eval()
    batch = make_batch()
    out = beam_search(model, batch.src, batch.src_lengths, bos_id=BOS, eos_id=EOS, beam_size=beam_size, max_len=6)
    tgt_in = torch.cat((torch.full((3, 1), BOS), out.tokens[:, :-1]), dim=1)
    with torch.no_grad():
        log_probs = F.log_softmax(model(type(batch)(batch.src, batch.src_lengths, tgt_in)), dim=-1)
    picked = log_probs.gather(2, out.tokens[..., None])[..., 0]  # (B, T)
    real = torch.arange(out.tokens.shape[1])[None, :] < out.lengths[:, None]
    torch.testing.assert_close(out.log_probs.double(), (picked * real).sum(1), rtol=1e-5, atol=1e-5)
    assert ((out.tokens == PAD) | real).all()  # padding after the hypothesis ends


class _Toy:
    """A hand-made Decodable where greedy is wrong: after BOS, ``a`` (0.5) beats ``b`` (0.4), but ``a`` is followed by
    EOS with 0.4 and ``b`` by EOS with 0.9, so ``b EOS`` (0.36) beats ``a EOS`` (0.2). Rows whose source starts with
    1 swap the roles of ``a`` and ``b``."""

    A, B = 3, 4

    def encode(self, src, src_lengths):
        return (src[:, 0].clone(), torch.full_like(src[:, 0], BOS))  # (swap, last token)

    def step(self, state, tokens):
        swap, _ = state
        a = torch.where(swap == 1, self.B, self.A)
        b = torch.where(swap == 1, self.A, self.B)
        probs = torch.full((tokens.shape[0], 5), 1e-9)
        rows = torch.arange(tokens.shape[0])
        first = tokens == BOS
        after_a = tokens == a
        probs[rows, a] = torch.where(first, 0.5, torch.where(after_a, 0.3, 0.05))
        probs[rows, b] = torch.where(first, 0.4, torch.where(after_a, 0.3, 0.05))
        probs[rows, EOS] = torch.where(first, 0.1, torch.where(after_a, 0.4, 0.9))
        return (probs / probs.sum(-1, keepdim=True)).log(), (swap, tokens)

    def reorder(self, state, index):
        return tuple(t.index_select(0, index) for t in state)


def test_beam_search_recovers_what_greedy_misses():
    toy = _Toy()
    src, lengths = torch.tensor([[0], [1]]), torch.tensor([1, 1])
    g = greedy(toy, src, lengths, bos_id=BOS, eos_id=EOS, max_len=5)
    b = beam_search(toy, src, lengths, bos_id=BOS, eos_id=EOS, beam_size=2, max_len=5)
    assert g.tokens.tolist() == [[3, EOS], [4, EOS]]
    assert b.tokens.tolist() == [[4, EOS], [3, EOS]]
    torch.testing.assert_close(b.log_probs, torch.tensor([0.36, 0.36]).log(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(g.log_probs, torch.tensor([0.2, 0.2]).log(), rtol=1e-4, atol=1e-4)
    assert b.finished.all() and b.lengths.tolist() == [2, 2]


def test_decoding_checks_its_arguments():
    model = transformer().eval()
    batch = make_batch()
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, batch.src, batch.src_lengths, bos_id=BOS, eos_id=EOS, beam_size=0)
    with pytest.raises(TypeError, match="encode, step and reorder"):
        greedy(object(), batch.src, batch.src_lengths, bos_id=BOS, eos_id=EOS)
    with pytest.raises(ValueError, match="max_len"):
        greedy(model, batch.src, batch.src_lengths, bos_id=BOS, eos_id=EOS, max_len=0)
