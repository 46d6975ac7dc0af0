"""``attnlab explain``: decoded phonemes, the letters each attended to, and the command's output and errors.

Tiny models are trained once for the module (the smoke budget: seconds). The Transformer gets 60 steps instead of
20 so that it says something for most words; the others speak after 20.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from attnlab.cli import main
from attnlab.experiments import load_model, task_from_spec, train_experiment
from attnlab.lab.explain import Explanation, explain, explain_words, explainable_sites, format_explanation
from attnlab.seq import RNNConfig, RNNSeq2Seq, greedy

WORDS = ["cat", "Hello", "attention", "a", "xylophone"]
STEPS = {"g2p-transformer": 60, "g2p-bahdanau": None, "g2p-decoder-only": None}
DEFAULT_SITE = {"g2p-transformer": "decoder.0.cross", "g2p-bahdanau": "decoder.cross",
                "g2p-decoder-only": "decoder.1.self"}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain-runs")
    out = {}
    for name, steps in STEPS.items():
        train_experiment(name, root / name, budget="smoke", max_steps=steps, progress=False, verbose=False)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def loaded(runs):
    """experiment -> (model in eval mode, src_vocab, tgt_vocab)."""
    out = {}
    for name, run in runs.items():
        model = load_model(run / "model.safetensors")
        task = task_from_spec(model.task)
        out[name] = (model.model, task.src_vocab, task.tgt_vocab)
    return out


@pytest.mark.parametrize("name", list(STEPS))
def test_rows_are_distributions_over_the_letters(runs, name):
    items = explain(WORDS, runs[name])
    assert [item.word for item in items] == [w.lower() for w in WORDS]
    assert any(item.phonemes for item in items), "the tiny model said nothing: the checks below would be empty"
    for item in items:
        assert item.letters == list(item.word)
        assert item.weights.shape == (len(item.phonemes), len(item.letters))  # EOS step excluded
        assert item.source_mass.shape == (len(item.phonemes),)
        assert item.site == DEFAULT_SITE[name] and item.head is None
        assert (item.weights >= 0).all()
        np.testing.assert_allclose(item.weights.sum(-1), 1.0, atol=1e-6)
        if name == "g2p-decoder-only":  # the letters get part of a row; the rest goes to SEP and earlier phonemes
            assert ((item.source_mass > 0) & (item.source_mass < 1)).all()
        else:
            np.testing.assert_allclose(item.source_mass, 1.0, atol=1e-5)


def test_explainable_sites(loaded):
    assert explainable_sites(loaded["g2p-transformer"][0]) == ["decoder.0.cross"]
    assert explainable_sites(loaded["g2p-bahdanau"][0]) == ["decoder.cross"]
    assert explainable_sites(loaded["g2p-decoder-only"][0]) == ["decoder.0.self", "decoder.1.self"]


def test_weights_are_the_ones_seen_while_decoding(loaded):
    """RNN decoder: step-by-step greedy decoding with weights returned equals the one teacher-forced pass."""
    model, src_vocab, tgt_vocab = loaded["g2p-bahdanau"]
    for item in explain_words(model, src_vocab, tgt_vocab, WORDS):
        src = torch.tensor([src_vocab.encode(item.letters)])
        state = model.encode(src, torch.tensor([src.shape[1]]))
        token = torch.tensor([tgt_vocab.bos_id])
        rows, said = [], []
        with torch.no_grad():
            for _ in range(len(item.phonemes) + 1):
                logits, state, weights = model.decoder.step(token, state, return_weights=True)  # weights (1, H, S)
                rows.append(weights[0].mean(0))
                token = logits.argmax(-1)
                said.append(int(token))
        expected = tgt_vocab.encode(item.phonemes) + ([tgt_vocab.eos_id] if item.finished else [])
        assert said[: len(expected)] == expected  # decoding with weights returned: the same output
        n = len(item.phonemes)
        stepwise = torch.stack(rows[:n]).double().numpy() if n else np.zeros((0, len(item.letters)))
        np.testing.assert_allclose(item.weights, stepwise, atol=1e-6)


@pytest.mark.parametrize("name", list(STEPS))
def test_teacher_forced_pass_reproduces_the_decoded_phonemes(loaded, name):
    """The pass that yields the weights sees what decoding saw: its argmax is the greedy output, EOS included."""
    model, src_vocab, tgt_vocab = loaded[name]
    for item in explain_words(model, src_vocab, tgt_vocab, WORDS):
        src = torch.tensor([src_vocab.encode(item.letters)])
        lengths = torch.tensor([src.shape[1]])
        decoded = greedy(model, src, lengths, bos_id=tgt_vocab.bos_id, eos_id=tgt_vocab.eos_id)
        assert tgt_vocab.decode(decoded.tokens[0]) == item.phonemes and bool(decoded.finished[0]) == item.finished
        tgt_in = torch.tensor([[tgt_vocab.bos_id, *tgt_vocab.encode(item.phonemes)]])
        batch = type("Batch", (), {"src": src, "src_lengths": lengths, "tgt_in": tgt_in})()
        with torch.no_grad():
            logits = model(batch)  # (1, T, V)
        expected = tgt_vocab.encode(item.phonemes) + ([tgt_vocab.eos_id] if item.finished else [])
        assert logits[0].argmax(-1).tolist()[: len(expected)] == expected


def test_one_head_and_the_mean_of_heads(loaded):
    model, src_vocab, tgt_vocab = loaded["g2p-transformer"]
    mean = explain_words(model, src_vocab, tgt_vocab, WORDS)
    heads = [explain_words(model, src_vocab, tgt_vocab, WORDS, head=h) for h in range(2)]
    for k, item in enumerate(mean):
        assert item.heads == 2 and heads[0][k].head == 0
        np.testing.assert_allclose(item.weights, (heads[0][k].weights + heads[1][k].weights) / 2, atol=1e-6)
    with pytest.raises(ValueError, match=r"head: expected an int in \[0, 2\)"):
        explain_words(model, src_vocab, tgt_vocab, ["cat"], head=2)
    with pytest.raises(ValueError, match="site: expected one of"):
        explain_words(model, src_vocab, tgt_vocab, ["cat"], site="encoder.0.self")


def test_beam_search(loaded):
    model, src_vocab, tgt_vocab = loaded["g2p-decoder-only"]
    for item in explain_words(model, src_vocab, tgt_vocab, WORDS, beam=3, site="decoder.0.self"):
        assert item.site == "decoder.0.self"
        assert item.weights.shape == (len(item.phonemes), len(item.letters))
    with pytest.raises(ValueError, match="beam"):
        explain_words(model, src_vocab, tgt_vocab, ["cat"], beam=0)


def test_words_outside_the_letters_are_refused(loaded):
    model, src_vocab, tgt_vocab = loaded["g2p-bahdanau"]
    with pytest.raises(ValueError, match=r"word 'naïve': character 'ï'"):
        explain_words(model, src_vocab, tgt_vocab, ["cat", "naïve"])
    with pytest.raises(ValueError, match="non-empty"):
        explain_words(model, src_vocab, tgt_vocab, ["  "])
    with pytest.raises(ValueError, match="words"):
        explain_words(model, src_vocab, tgt_vocab, "cat")


def test_a_model_without_attention_has_nothing_to_explain(loaded):
    _, src_vocab, tgt_vocab = loaded["g2p-bahdanau"]
    plain = RNNSeq2Seq(RNNConfig(src_vocab=len(src_vocab), tgt_vocab=len(tgt_vocab), attention=None, hidden=8,
                                 embed_dim=8))  # fmt: skip
    with pytest.raises(ValueError, match="nothing to explain"):
        explain_words(plain, src_vocab, tgt_vocab, ["cat"])


def test_format_explanation():
    item = Explanation("cat", ["K", "AE1", "T"], list("cat"), np.eye(3), "decoder.cross", None, 1, np.ones(3), True)
    plain = format_explanation(item, color=False)
    assert plain.splitlines()[0] == "cat: K AE1 T"
    assert "\nK   @@      c 1.00" in plain and "\x1b" not in plain
    assert "\x1b[" in format_explanation(item, color=True)
    silent = Explanation("a", [], ["a"], np.zeros((0, 1)), "decoder.cross", None, 1, np.zeros(0), True)
    assert "no attention to show" in format_explanation(silent, color=False)


# -- the command -------------------------------------------------------------------------------------------------
def test_cli_prints_phonemes_and_a_plain_heatmap(runs, loaded, capsys):
    model, src_vocab, tgt_vocab = loaded["g2p-bahdanau"]
    expected = explain_words(model, src_vocab, tgt_vocab, ["cat", "hello"])
    assert main(["explain", "cat", "Hello", "--model", str(runs["g2p-bahdanau"]), "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    for item in expected:
        assert f"{item.word}: {' '.join(item.phonemes) or '(nothing)'}" in out
    assert "which letters each phoneme attended to (decoder.cross, 1 head)" in out
    assert out.count("scale:") == sum(bool(item.phonemes) for item in expected) > 0


def test_cli_colors_a_terminal_unless_told_not_to(runs, capsys, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    model = str(runs["g2p-decoder-only"])
    assert main(["explain", "cat", "--model", model]) == 0
    assert "\x1b[48;5;" in capsys.readouterr().out
    assert main(["explain", "cat", "--model", model, "--no-color"]) == 0
    assert "\x1b" not in capsys.readouterr().out
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["explain", "cat", "--model", model]) == 0
    assert "\x1b" not in capsys.readouterr().out


@pytest.mark.parametrize("words", [["cat"], ["cat", "attention", "hello"]])
def test_cli_png(runs, tmp_path, capsys, words):
    path = tmp_path / "figs" / "explain.png"
    assert main(["explain", *words, "--model", str(runs["g2p-transformer"]), "--png", str(path), "--beam", "2"]) == 0
    assert f"figure: {path}" in capsys.readouterr().out
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 150_000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["naïve"], "word 'naïve': character 'ï'"),
        (["cat", "--site", "nope"], "site: expected one of"),
        (["cat", "--head", "7"], "head: expected an int in [0, 2)"),
        (["cat", "--png", "out.jpg"], "--png: expected a file name ending in .png"),
    ],
)
def test_cli_errors_are_one_line(runs, capsys, extra, message):
    assert main(["explain", *extra, "--model", str(runs["g2p-transformer"])]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("attnlab explain: error: ") and captured.err.count("\n") == 1
    assert message in captured.err


def test_cli_without_a_shipped_model_says_what_to_do(tmp_path, capsys, monkeypatch):
    import attnlab.experiments.run as run

    monkeypatch.setattr(run, "SHIPPED_G2P_MODEL", tmp_path / "missing" / "model.safetensors")
    assert main(["explain", "cat"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no --model given and no shipped model" in err and "attnlab train" in err
