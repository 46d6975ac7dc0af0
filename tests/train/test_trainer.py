"""The trainer in-process: config checks, the LR schedule, token batches, NaN stops, early stopping, evaluation
that cannot perturb training, and resume refusing a different config."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from attnlab.cli import main
from attnlab.data import as_symbols, collate_seq2seq, make_sequence_task, task_vocab
from attnlab.seq import RNNConfig, RNNSeq2Seq
from attnlab.train.checkpoint import load_checkpoint, load_tensors
from attnlab.train.rundir import checkpoint_dir, prepare_run_dir
from attnlab.train.trainer import (
    NonFiniteLossError,
    TrainConfig,
    TrainData,
    Trainer,
    Validation,
    WarmupDecay,
    _kept_weights,
    make_batches,
    seq2seq_loss,
)

torch.set_num_threads(1)
VOCAB = task_vocab(6)


def _data(n: int = 48) -> TrainData:
    pairs = as_symbols(make_sequence_task("reverse", n, 1, 6, 6, seed=0))
    return TrainData(pairs, [2 * len(s) + 1 for s, _ in pairs], lambda ex: collate_seq2seq(ex, VOCAB, VOCAB))


def _model() -> RNNSeq2Seq:
    torch.manual_seed(0)
    return RNNSeq2Seq(RNNConfig(src_vocab=len(VOCAB), tgt_vocab=len(VOCAB), embed_dim=8, hidden=16, cell="gru",
                                dropout=0.1))  # fmt: skip


def _config(**changes) -> TrainConfig:
    base = dict(max_steps=12, batch_size=8, lr=1e-2, warmup_steps=2, eval_every=3, checkpoint_every=5)
    return TrainConfig(**{**base, **changes})


def _crash_at_step(step: int):
    """A loss function that raises on its ``step``-th call (a crash in the middle of a run)."""
    calls = [0]

    def loss_fn(model, batch):
        calls[0] += 1
        if calls[0] == step:
            raise RuntimeError("simulated crash")
        return seq2seq_loss(model, batch)

    return loss_fn


def _read_log(run, name="train.jsonl"):
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


# -- config ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"max_steps": 0}, ValueError, "max_steps"),
        ({"batch_size": 2.5}, TypeError, "batch_size"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": float("nan")}, TypeError, "lr"),
        ({"schedule": "step"}, ValueError, "schedule"),
        ({"batch_unit": "words"}, ValueError, "batch_unit"),
        ({"betas": (0.9, 1.0)}, ValueError, r"betas\[1\]"),
        ({"clip_norm": 0.0}, ValueError, "clip_norm"),
        ({"patience": 0}, ValueError, "patience"),
        ({"bf16": 1}, TypeError, "bf16"),
        ({"label_smoothing": 1.0}, ValueError, "label_smoothing"),
    ],
)
def test_config_refuses_bad_values_naming_the_field(changes, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**changes)


def test_config_json_round_trip():
    config = TrainConfig(betas=[0.9, 0.98], patience=3, clip_norm=None, batch_unit="tokens")
    assert config.betas == (0.9, 0.98)
    assert TrainConfig.from_json(json.loads(json.dumps(config.to_json()))) == config
    with pytest.raises(ValueError, match="unknown fields"):
        TrainConfig.from_json({"max_step": 3})


# -- schedule ----------------------------------------------------------------------------------------------------
def test_warmup_then_decay_shapes():
    cosine = WarmupDecay(4, 104, "cosine", 0.1)
    assert [cosine(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]  # update k+1 uses factor(k)
    assert cosine(53) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert cosine(103) == pytest.approx(0.1) and cosine(500) == pytest.approx(0.1)
    linear = WarmupDecay(0, 10, "linear")
    assert [round(linear(k), 6) for k in (0, 4, 9)] == [0.9, 0.5, 0.0]
    assert WarmupDecay(100, 1000, "inverse_sqrt")(399) == pytest.approx(0.5)
    assert WarmupDecay(3, 10, "constant")(7) == 1.0
    assert json.dumps(cosine.__dict__)  # what LambdaLR puts into the checkpoint


# -- batches -----------------------------------------------------------------------------------------------------
def test_token_batches_respect_the_budget_and_are_reproducible():
    lengths = np.random.default_rng(0).integers(1, 30, size=500)
    config = TrainConfig(batch_size=120, batch_unit="tokens", seed=3)
    batches = make_batches(lengths, config, epoch=2)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) * max(lengths[b]) <= 120 for b in batches)
    assert batches == make_batches(lengths, config, epoch=2)
    assert batches != make_batches(lengths, config, epoch=3)
    sentences = make_batches(lengths, dataclasses.replace(config, batch_unit="sentences", batch_size=16), 0)
    assert sorted(len(b) for b in sentences) == [500 % 16] + [16] * (500 // 16)


# -- training runs -----------------------------------------------------------------------------------------------
def test_nan_loss_stops_with_the_step_and_keeps_the_best_checkpoint(tmp_path):
    run = prepare_run_dir(tmp_path / "run")
    calls, scores = [0], iter([3.0, 2.0, 1.0, 0.5])

    def loss_fn(model, batch):
        calls[0] += 1
        loss = seq2seq_loss(model, batch)
        return loss._replace(total=loss.total * math.nan) if calls[0] == 8 else loss

    validation = Validation(lambda model: {"score": next(scores)}, "score")
    trainer = Trainer(_model(), _config(), _data(), run, loss_fn=loss_fn, validation=validation, verbose=False)
    with pytest.raises(NonFiniteLossError, match=r"^step 8: the training loss is nan") as info:
        trainer.fit()
    assert info.value.step == 8
    _, best_meta = load_tensors(run / "best.safetensors")
    assert best_meta["step"] == 6 and best_meta["dev"] == {"score": 2.0}
    assert load_checkpoint(checkpoint_dir(run), restore_rng=False)["trainer"]["step"] == 5
    assert not (run / "model.safetensors").exists()
    log = _read_log(run)
    assert [r["step"] for r in log] == list(range(1, 9)) and math.isnan(log[-1]["loss"])


def test_cli_reports_a_nan_stop_in_one_line(monkeypatch, tmp_path, capsys):
    def diverge(self, *, resume=False):
        raise NonFiniteLossError(17, "step 17: the training loss is nan; stopped before updating the weights")

    monkeypatch.setattr(Trainer, "fit", diverge)
    code = main(["train", "reverse-rnn", "--budget", "smoke", "--out", str(tmp_path / "r"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == ["attnlab train: error: step 17: the training loss is nan; stopped before updating "
                                 "the weights"]  # fmt: skip


def test_early_stopping_after_patience_evaluations(tmp_path):
    run = prepare_run_dir(tmp_path / "run")
    validation = Validation(lambda model: {"accuracy": 50.0}, "accuracy", higher_is_better=True)
    result = Trainer(_model(), _config(patience=2, max_steps=100), _data(), run, validation=validation,
                     verbose=False).fit()  # fmt: skip
    assert (result.step, result.stop_reason, result.best, result.best_step) == (9, "early_stopping", 50.0, 3)
    assert load_checkpoint(checkpoint_dir(run), restore_rng=False)["trainer"]["done"] is True
    assert json.loads((run / "summary.json").read_text())["stop_reason"] == "early_stopping"
    assert load_tensors(run / "model.safetensors")[1]["step"] == 9


def test_evaluation_never_changes_the_training_trajectory(tmp_path):
    def noisy(model):  # an evaluation that draws from every global RNG
        import random

        return {"x": float(torch.rand(1)) + random.random() + float(np.random.rand())}

    logs = []
    for eval_every in (1, 1000):
        run = prepare_run_dir(tmp_path / f"every{eval_every}")
        Trainer(_model(), _config(eval_every=eval_every), _data(), run, validation=Validation(noisy, "x"),
                verbose=False).fit()  # fmt: skip
        logs.append((run / "train.jsonl").read_bytes())
    assert logs[0] == logs[1]


def test_resume_refuses_a_different_config_and_a_used_dir(tmp_path):
    run = prepare_run_dir(tmp_path / "run")
    Trainer(_model(), _config(max_steps=4), _data(), run, verbose=False).fit()
    with pytest.raises(ValueError, match=r"lr=0\.01 \(now 0\.02\)"):
        Trainer(_model(), _config(max_steps=4, lr=2e-2), _data(), run, verbose=False).fit(resume=True)
    with pytest.raises(ValueError, match=r"already has train\.jsonl"):
        Trainer(_model(), _config(max_steps=4), _data(), run, verbose=False).fit()
    result = Trainer(_model(), _config(max_steps=4), _data(), run, verbose=False).fit(resume=True)
    assert result.step == 4 and len(_read_log(run)) == 4  # a finished run stays finished


def test_resume_after_a_crash_is_bit_identical_with_bf16_and_token_batches(tmp_path):
    config = _config(bf16=True, batch_unit="tokens", batch_size=60, max_steps=11, checkpoint_every=4, eval_every=5)
    validation = Validation(lambda model: {"x": 1.0}, "x")
    reference = prepare_run_dir(tmp_path / "reference")
    Trainer(_model(), config, _data(), reference, validation=validation, verbose=False).fit()

    run = prepare_run_dir(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(_model(), config, _data(), run, loss_fn=_crash_at_step(7), validation=validation, verbose=False).fit()
    torch.manual_seed(123)  # whatever the RNGs hold now, resume restores them
    Trainer(_model(), config, _data(), run, validation=validation, verbose=False).fit(resume=True)
    (a, _), (b, _) = load_tensors(reference / "model.safetensors"), load_tensors(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "train.jsonl").read_bytes() == (reference / "train.jsonl").read_bytes()


def test_keep_weights_writes_the_last_checkpoints_weights_with_their_own_dev_scores(tmp_path):
    run = prepare_run_dir(tmp_path / "run")
    validation = Validation(lambda model: {"x": 1.0}, "x")
    # checkpoints at steps 5, 10 and 12 (the end), evaluations at 3, 6, 9 and 12
    Trainer(_model(), _config(max_steps=12), _data(), run, validation=validation, verbose=False,
            keep_weights=2).fit()  # fmt: skip
    files = sorted(p.name for p in (run / "weights").iterdir())
    assert files == ["step-0000010.safetensors", "step-0000012.safetensors"]
    last, last_meta = load_tensors(run / "weights" / files[1])
    final, final_meta = load_tensors(run / "model.safetensors")
    assert last.keys() == final.keys() and all(torch.equal(last[k], final[k]) for k in last)
    assert last_meta == final_meta and last_meta["step"] == 12 and last_meta["dev"] == {"x": 1.0}
    earlier, meta = load_tensors(run / "weights" / files[0])
    assert meta["step"] == 10 and meta["dev"] is None  # the last evaluation (step 9) scored other weights
    assert any(not torch.equal(earlier[k], last[k]) for k in last)


def test_keep_weights_is_output_only_a_resumed_run_may_turn_it_on(tmp_path):
    reference = prepare_run_dir(tmp_path / "reference")
    Trainer(_model(), _config(), _data(), reference, verbose=False).fit()
    assert not (reference / "weights").exists()  # off by default

    run = prepare_run_dir(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(_model(), _config(), _data(), run, loss_fn=_crash_at_step(7), verbose=False).fit()
    Trainer(_model(), _config(), _data(), run, verbose=False, keep_weights=5).fit(resume=True)
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["step-0000010.safetensors",
                                                                    "step-0000012.safetensors"]  # fmt: skip
    (a, _), (b, _) = load_tensors(reference / "model.safetensors"), load_tensors(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    for bad, error in ((-1, ValueError), (1.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="keep_weights"):
            Trainer(_model(), _config(), _data(), run, keep_weights=bad)


def test_resume_drops_kept_weights_a_killed_attempt_wrote_past_the_checkpoint(tmp_path):
    run = prepare_run_dir(tmp_path / "run")
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(_model(), _config(), _data(), run, loss_fn=_crash_at_step(7), verbose=False, keep_weights=3).fit()
    weights = run / "weights"
    assert sorted(p.name for p in weights.iterdir()) == ["step-0000005.safetensors"]
    # what a kill can leave: weights written past the committed checkpoint (step 5) and a torn temp file
    (weights / "step-0000006.safetensors").write_bytes((weights / "step-0000005.safetensors").read_bytes())
    (weights / ".step-0000010.safetensors.tmp-1234").write_bytes(b"torn")
    Trainer(_model(), _config(), _data(), run, verbose=False, keep_weights=3).fit(resume=True)
    assert sorted(p.name for p in weights.iterdir()) == ["step-0000005.safetensors", "step-0000010.safetensors",
                                                          "step-0000012.safetensors"]  # fmt: skip
    assert load_tensors(weights / "step-0000005.safetensors")[1]["step"] == 5


def test_kept_weights_are_ordered_by_step_number_not_by_name(tmp_path):
    for step in (900, 10_000_000, 20):
        (tmp_path / f"step-{step:07d}.safetensors").write_bytes(b"")
    (tmp_path / "step-latest.safetensors").write_bytes(b"")  # not a step file: ignored
    assert sorted(_kept_weights(tmp_path)) == [20, 900, 10_000_000]
