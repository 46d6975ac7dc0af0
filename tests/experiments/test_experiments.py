"""The experiment registry, model files that rebuild their model, and `attnlab list` / `attnlab eval` errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import safetensors.torch
import torch

from attnlab.cli import main
from attnlab.experiments import (
    BUDGETS,
    SHIPPED_G2P_MODEL,
    G2PTask,
    ReverseTask,
    available_experiments,
    build_model,
    evaluate_model,
    get_experiment,
    load_model,
    model_spec,
    task_from_spec,
)
from attnlab.experiments.run import training_at_step
from attnlab.train.checkpoint import CheckpointError, save_tensors

torch.set_num_threads(1)

CORE = ["g2p-rnn", "g2p-bahdanau", "g2p-luong", "g2p-lstmn", "g2p-transformer", "g2p-decoder-only", "reverse-rnn",
        "reverse-bahdanau"]  # fmt: skip
SCORES = ["dot", "scaled_dot", "general", "additive", "cosine", "location"]
LAB = ["reverse-bahdanau-4heads", "reverse-bahdanau-projected", "reverse-transformer", "reverse-decoder-only",
       *[f"scores-{model}-{score}" for score in SCORES for model in ("rnn", "transformer")], "g2p-bahdanau-4heads",
       "g2p-bahdanau-smoothed", "g2p-transformer-srceos",
       *[f"g2p-scores-{model}-{score}" for score in SCORES for model in ("rnn", "transformer")]]  # fmt: skip
BLOCKS = ["aa_conv", "botnet", "cbam", "criss_cross", "eca", "nonlocal", "sagan", "sasa", "se"]
POINTER = ["cnn", *BLOCKS, "sagan-stage1", "sagan-stage2", "sagan-gate1", "sagan-nogate", "sagan-kv2",
           "sagan-stage2-kv2", "vit"]  # fmt: skip
RELATIONAL = ["cnn", "se", "nonlocal", "sagan", "vit"]
CLUTTERED = ["cnn", "se", "cbam", "nonlocal", "sagan", "vit"]
CANVAS = [*(f"canvas-pointer-{n}" for n in POINTER), *(f"canvas-relational-{n}" for n in RELATIONAL),
          *(f"canvas-cluttered-{n}" for n in CLUTTERED)]  # fmt: skip
NOSTRESS = [f"g2p-{m}-nostress" for m in ("rnn", "bahdanau", "luong", "lstmn", "transformer")]
NAMES = [*CORE, *LAB, *NOSTRESS, "reader-cross", "reader-single", *CANVAS]


def test_registry_lists_every_experiment_with_all_budgets(capsys):
    assert sorted(available_experiments()) == sorted(NAMES)
    for name in NAMES:
        experiment = get_experiment(name)
        assert set(BUDGETS) <= set(experiment.budgets)
        steps = [experiment.budget(budget).train.max_steps for budget in BUDGETS]
        assert steps == sorted(steps) and steps[0] <= 50  # smoke < quick < full
        assert "\n" not in experiment.description
    with pytest.raises(KeyError, match="available: g2p-rnn"):
        get_experiment("g2p-gru")
    with pytest.raises(KeyError, match="budget"):
        get_experiment("g2p-rnn").budget("huge")
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == available_experiments()


@pytest.fixture(scope="module")
def g2p_task():
    return G2PTask(**get_experiment("g2p-rnn").budget("smoke").data)


@pytest.mark.parametrize("name", [*CORE, *LAB])  # the sequence-to-sequence ones; vision and readers: own tests
def test_smoke_models_train_one_step_and_round_trip_through_their_spec(name, g2p_task):
    experiment = get_experiment(name)
    plan = experiment.budget("smoke")
    task = g2p_task if name.startswith("g2p") else experiment.make_task(**plan.data)
    torch.manual_seed(0)
    model = experiment.make_model(task, **plan.model)
    data = task.train_data()
    batch = data.collate([data.examples[i] for i in range(4)])
    logits = model(batch)
    assert logits.shape[:2] == batch.tgt_out.shape and logits.shape[-1] == len(task.tgt_vocab)
    spec = json.loads(json.dumps(model_spec(model)))  # plain JSON
    rebuilt = build_model(spec)
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    assert torch.equal(rebuilt(batch), model(batch))
    assert task_from_spec(json.loads(json.dumps(task.spec()))).spec() == task.spec()


def test_model_files_rebuild_the_model_and_refuse_foreign_or_damaged_files(tmp_path, g2p_task):
    torch.manual_seed(0)
    experiment = get_experiment("g2p-transformer")
    model = experiment.make_model(g2p_task, **experiment.budget("smoke").model)
    meta = {"format": "attnlab-model", "version": 1, "model": model_spec(model), "task": g2p_task.spec()}
    save_tensors(tmp_path / "m.safetensors", model.state_dict(), meta)
    loaded = load_model(tmp_path / "m.safetensors")
    assert not loaded.model.training and loaded.task["name"] == "g2p"
    expected = model.state_dict()
    assert all(torch.equal(value, expected[name]) for name, value in loaded.model.state_dict().items())

    safetensors.torch.save_file({"w": torch.zeros(2)}, tmp_path / "foreign.safetensors")
    with pytest.raises(ValueError, match="expected an attnlab model file"):
        load_model(tmp_path / "foreign.safetensors")
    bad = {**meta, "model": {**meta["model"], "config": {**meta["model"]["config"], "dim": 64}}}
    save_tensors(tmp_path / "mismatch.safetensors", model.state_dict(), bad)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_model(tmp_path / "mismatch.safetensors")
    data = bytearray((tmp_path / "m.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "tampered.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_model(tmp_path / "tampered.safetensors")
    with pytest.raises(ValueError, match="trained for task 'g2p', not 'reverse'"):
        evaluate_model("reverse", tmp_path / "m.safetensors")


def test_eval_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["eval", "g2p", "--model", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no model.safetensors" in err[0] and "best.safetensors" in err[0]
    assert main(["eval", "g2p", "--model", str(tmp_path / "missing.safetensors"), "--json"]) == 1
    assert "no such file" in capsys.readouterr().err
    if not SHIPPED_G2P_MODEL.exists():
        assert main(["eval", "g2p"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no shipped model" in err[0]


def test_reverse_smoke_trains_and_evaluates_by_length(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "reverse-bahdanau", "--budget", "smoke", "--max-steps", "6", "--out", str(run),
                 "--device", "cpu", "--keep-weights", "1"]) == 0  # fmt: skip
    capsys.readouterr()
    assert [p.name for p in (run / "weights").iterdir()] == ["step-0000006.safetensors"]  # checkpoints at 5 and 6
    kept = training_at_step(run / "weights" / "step-0000006.safetensors", 6)  # read from the run's eval.jsonl
    assert kept == training_at_step(run / "model.safetensors", 6) and kept["train_seconds"] > 0
    assert main(["eval", "reverse", "--model", str(run), "--by-length", "--json", "--limit", "20"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["sequences"] == 20 and 0.0 <= scores["accuracy"] <= 100.0
    assert sum(row["n"] for row in scores["by_length"].values()) == 20
    task = ReverseTask(**get_experiment("reverse-bahdanau").budget("smoke").data)
    assert task.pairs("dev") != task.pairs("test")


def test_the_smoothed_bahdanau_variant_differs_from_its_base_only_in_label_smoothing():
    base, smoothed = get_experiment("g2p-bahdanau"), get_experiment("g2p-bahdanau-smoothed")
    assert smoothed.make_model is base.make_model and smoothed.make_task is base.make_task
    for budget in BUDGETS:
        plan, variant = base.budget(budget), smoothed.budget(budget)
        assert plan.train.label_smoothing == 0.0 and variant.train.label_smoothing == 0.1
        assert variant == dataclasses.replace(plan, train=dataclasses.replace(plan.train, label_smoothing=0.1))


def test_a_stress_free_g2p_task_merges_stress_variants_and_reports_no_stressed_scores(tmp_path, capsys):
    plain = G2PTask(**get_experiment("g2p-bahdanau-nostress").budget("smoke").data, stress=False)
    assert plain.stress is False and not any(ch.isdigit() for sym in plain.tgt_vocab.to_json() for ch in str(sym))
    assert len(plain.tgt_vocab) == len(G2PTask().tgt_vocab) - 30  # 69 stressed phonemes -> 39
    full, stressed = G2PTask(stress=False).train_data().examples, G2PTask().train_data().examples
    assert all(not ch.isdigit() for _, pron in full for p in pron for ch in p)
    merged = {(tuple(w), tuple(p.rstrip("012") for p in pron)) for w, pron in stressed}
    assert sorted((tuple(w), tuple(p)) for w, p in full) == sorted(merged)  # each merged pronunciation once
    assert len(full) < len(stressed)
    assert task_from_spec(json.loads(json.dumps(plain.spec()))).stress is False
    old_spec = {k: v for k, v in G2PTask().spec().items() if k != "stress"}  # files written before the option
    assert task_from_spec(old_spec).stress is True
    with pytest.raises(TypeError, match="stress"):
        G2PTask(stress="no")

    run = tmp_path / "run"
    assert main(["train", "g2p-bahdanau-nostress", "--budget", "smoke", "--out", str(run), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["eval", "g2p", "--model", str(run), "--split", "dev", "--json", "--limit", "30", "--by-length"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["wer"] is None and scores["per"] is None and 0.0 <= scores["wer_no_stress"] <= 100.0
    assert all(row["wer"] is None and row["wer_no_stress"] is not None for row in scores["by_length"].values())
    assert main(["eval", "g2p", "--model", str(run), "--split", "dev", "--limit", "30", "--by-length"]) == 0
    shown = capsys.readouterr().out
    assert "wer            n/a (the model was trained without stress)" in shown and "wer_no_stress" in shown
