"""Ensemble: the mean of the members' next-token distributions, decoded by the same greedy and beam search."""

from __future__ import annotations

import pytest
import torch
from seq_helpers import BOS, EOS, PAD, TGT_VOCAB, decoder_only, make_batch, one_thread, rnn, transformer

from attnlab.experiments import build_model, load_model, model_spec
from attnlab.seq import Ensemble, beam_search, greedy
from attnlab.train.checkpoint import save_tensors

IDS = {"bos_id": BOS, "eos_id": EOS, "pad_id": PAD}


def _members():
    torch.manual_seed(0)
    return [rnn("bahdanau").eval(), transformer().eval(), decoder_only().eval()]


def test_forward_is_the_log_of_the_members_mean_distribution_and_names_their_sites():
    members = _members()
    ensemble = Ensemble(members).eval()
    batch = make_batch()
    with torch.no_grad(), one_thread():
        out = ensemble(batch, return_weights=True)
        probs = [torch.softmax(m(batch).double(), -1) for m in members]
    expected = torch.log(sum(probs) / 3)
    torch.testing.assert_close(out.logits.double(), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(out.logits.shape[:2]))
    names = [site.name for site in ensemble.attention_sites()]
    assert "members.0.decoder.cross" in names and any(n.startswith("members.1.decoder.") for n in names)
    assert set(out.weights) == set(names)
    assert torch.equal(out.weights["members.0.decoder.cross"], members[0](batch, return_weights=True).weights[
        "decoder.cross"])  # fmt: skip


def test_an_ensemble_of_one_decodes_exactly_like_its_member():
    torch.manual_seed(1)
    member = transformer().eval()
    batch = make_batch((6, 4, 2, 5))
    with torch.no_grad(), one_thread():
        for decode in (greedy, lambda m, s, n, **ids: beam_search(m, s, n, beam_size=3, **ids)):
            alone = decode(member, batch.src, batch.src_lengths, max_len=8, **IDS)
            together = decode(Ensemble([member]), batch.src, batch.src_lengths, max_len=8, **IDS)
            assert torch.equal(alone.tokens, together.tokens)
            torch.testing.assert_close(alone.log_probs, together.log_probs)


def test_incremental_decoding_scores_what_teacher_forcing_scores():
    ensemble = Ensemble(_members()).eval()
    batch = make_batch((5, 3, 4))
    with torch.no_grad(), one_thread():
        decoded = beam_search(ensemble, batch.src, batch.src_lengths, beam_size=3, max_len=6, length_penalty=0.0,
                              **IDS)  # fmt: skip
        steps = decoded.tokens.shape[1]
        tgt_in = torch.cat((torch.full((3, 1), BOS), decoded.tokens[:, : steps - 1]), dim=1)
        log_probs = torch.log_softmax(ensemble(type(batch)(batch.src, batch.src_lengths, tgt_in)).float(), -1)
    chosen = log_probs.gather(-1, decoded.tokens[..., None])[..., 0]
    produced = torch.arange(steps)[None] < decoded.lengths[:, None]
    torch.testing.assert_close((chosen * produced).sum(1), decoded.log_probs, rtol=0, atol=1e-4)


def test_spec_round_trip_and_a_saved_ensemble_loads_back(tmp_path):
    ensemble = Ensemble(_members())
    spec = model_spec(ensemble)
    assert spec["class"] == "Ensemble" and [m["class"] for m in spec["config"]["members"]] == [
        "RNNSeq2Seq", "Transformer", "DecoderOnlyTransformer"]  # fmt: skip
    rebuilt = build_model(spec).eval()
    rebuilt.load_state_dict(ensemble.state_dict())
    batch = make_batch()
    with torch.no_grad():
        assert torch.equal(rebuilt(batch), ensemble.eval()(batch))
    meta = {"format": "attnlab-model", "version": 1, "model": spec, "task": {"name": "g2p"}}
    save_tensors(tmp_path / "e.safetensors", ensemble.state_dict(), meta)
    loaded = load_model(tmp_path / "e.safetensors").model
    with torch.no_grad():
        assert torch.equal(loaded(batch), ensemble.eval()(batch))


def test_float64_members_give_a_float64_mixture():
    members = [m.double() for m in _members()]
    batch = make_batch()
    with torch.no_grad():
        mixed = Ensemble(members).eval()(batch)
        expected = torch.log(sum(torch.softmax(m(batch), -1) for m in members) / 3)
    assert mixed.dtype == torch.float64
    torch.testing.assert_close(mixed, expected, rtol=0, atol=1e-12)


def test_refusals():
    with pytest.raises(ValueError, match="at least one model"):
        Ensemble([])
    with pytest.raises(TypeError, match="expected a list of models"):
        Ensemble(42)
    with pytest.raises(ValueError, match="nothing else"):
        build_model({"class": "Ensemble", "config": {"members": [model_spec(rnn())], "weigths": [1]}})
    with pytest.raises(TypeError, match="lacks"):
        Ensemble([torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match="Ensemble: expected config"):
        build_model({"class": "Ensemble", "config": {"members": []}})
    torch.manual_seed(0)
    mixed = Ensemble([rnn("bahdanau"), rnn("bahdanau", tgt_vocab=TGT_VOCAB + 1)]).eval()
    batch = make_batch()
    with pytest.raises(ValueError, match="different vocabularies"), torch.no_grad():
        mixed(batch)
    with pytest.raises(ValueError, match="different vocabularies"):
        greedy(mixed, batch.src, batch.src_lengths, **IDS)


def test_weights_mix_the_members_unevenly_and_survive_the_spec():
    members = [m.double() for m in _members()]
    batch = make_batch()
    weighted = Ensemble(members, weights=[2, 1, 1]).eval()
    assert weighted.weights == (0.5, 0.25, 0.25)
    with torch.no_grad():
        probs = [torch.softmax(m(batch), -1) for m in members]
        torch.testing.assert_close(weighted(batch), torch.log(0.5 * probs[0] + 0.25 * probs[1] + 0.25 * probs[2]),
                                   rtol=0, atol=1e-12)  # fmt: skip
        equal = Ensemble(members, weights=[3.0, 3.0, 3.0]).eval()
        torch.testing.assert_close(equal(batch), Ensemble(members).eval()(batch), rtol=0, atol=1e-12)
        spec = model_spec(weighted)
        assert spec["config"]["weights"] == [0.5, 0.25, 0.25]
        rebuilt = build_model(spec).double().eval()
        rebuilt.load_state_dict(weighted.state_dict())
        assert torch.equal(rebuilt(batch), weighted(batch))
        old = {**spec, "config": {"members": spec["config"]["members"]}}  # a file from before weights: uniform
        assert build_model(old).weights == (1 / 3,) * 3
    for bad in ([1, 1], [1, 0, 1], [1, -2, 1], [1, float("nan"), 1], [1, True, 1], "111"):
        with pytest.raises(ValueError, match="weights"):
            Ensemble(members, weights=bad)
