"""Canvas experiments: every one trains at the smoke budget and round-trips through its weight file; parameter
counts stay comparable; the sweep skips finished runs; the summary's statistics are right on a hand example."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.experiments import get_experiment, load_model, parameter_count, train_experiment
from attnlab.experiments import sweep as sweep_module
from attnlab.experiments.sweep import SWEEP_FILE, format_table, run_sweep, summarize
from attnlab.experiments.vision import (
    AA_CONV_LARGER,
    BLOCKS,
    PARAMETER_TOLERANCE,
    CanvasCNN,
    CanvasCNNConfig,
    CanvasTask,
    canvas_experiments,
)

torch.set_num_threads(1)

NAMES = canvas_experiments()


def test_registry_has_every_block_the_vit_and_the_ablations():
    pointer = canvas_experiments("pointer")
    assert {f"canvas-pointer-{b}" for b in BLOCKS} <= set(pointer)
    for extra in ("cnn", "vit", "sagan-stage1", "sagan-stage2", "sagan-gate1", "sagan-nogate", "sagan-kv2"):
        assert f"canvas-pointer-{extra}" in pointer
    assert "canvas-cluttered-cnn" in NAMES and "canvas-relational-sagan" in NAMES
    assert len(set(NAMES)) == len(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_canvas_experiment_trains_at_smoke_budget(name, tmp_path):
    result = train_experiment(name, tmp_path / "run", budget="smoke", seed=0, progress=False, verbose=False)
    assert result.step == get_experiment(name).budget("smoke").train.max_steps
    assert result.metric == "accuracy" and 0.0 <= result.best <= 100.0
    loaded = load_model(result.model_path)  # the config in the file rebuilds the model
    task = CanvasTask.from_spec(loaded.task)
    assert type(loaded.model).__name__ in ("CanvasCNN", "CanvasViT")
    scores = task.evaluate(loaded.model, "test")
    assert scores["examples"] == task.sizes["test"] and 0.0 <= scores["accuracy"] <= 100.0


def _full_parameters(name: str) -> int:
    experiment = get_experiment(name)
    plan = experiment.budget("full")
    task = CanvasTask(plan.data["kind"], 1, 1, 1, options=plan.data["options"])  # sizes do not change the model
    return parameter_count(experiment.make_model(task, **plan.model))


@pytest.mark.parametrize("kind", ["pointer", "relational", "cluttered"])
def test_parameter_counts_are_within_tolerance_of_the_plain_cnn(kind):
    """Block models and the ViT: at most 5% larger and at most 15% smaller than the plain CNN (AA-conv, itself a 3x3
    convolution over half the channels plus attention: at most 25% larger)."""
    plain = _full_parameters(f"canvas-{kind}-cnn")
    for name in canvas_experiments(kind):
        if name.endswith("-cnn"):
            continue
        count = _full_parameters(name)
        larger = AA_CONV_LARGER if name.endswith("-aa_conv") else PARAMETER_TOLERANCE["larger"]
        assert plain * (1 - PARAMETER_TOLERANCE["smaller"]) <= count <= plain * (1 + larger), (name, count, plain)


def test_gate_ablation_freezes_or_reinitialises_gamma_and_survives_a_round_trip(tmp_path):
    blocks = (("stage3", "sagan", {"kv_stride": 2}),)
    nogate = CanvasCNN(CanvasCNNConfig(num_classes=3, blocks=blocks, gate_init=1.0, gate_trainable=False))
    gamma = nogate.attention["stage3"][0].gamma
    assert gamma.item() == 1.0 and not gamma.requires_grad
    default = CanvasCNN(CanvasCNNConfig(num_classes=3, blocks=blocks))
    assert default.attention["stage3"][0].gamma.item() == 0.0 and default.attention["stage3"][0].gamma.requires_grad
    with pytest.raises(ValueError, match="no inserted block has a gate"):
        CanvasCNN(CanvasCNNConfig(blocks=(("stage3", "se", {}),), gate_init=1.0))
    result = train_experiment("canvas-pointer-sagan-nogate", tmp_path / "run", budget="smoke", verbose=False)
    rebuilt = load_model(result.model_path).model
    assert rebuilt.config.gate_trainable is False and rebuilt.attention["stage3"][0].gamma.item() == 1.0


def test_sweep_skips_finished_runs_and_resumes_killed_ones(tmp_path, monkeypatch):
    names = ["canvas-pointer-cnn", "canvas-pointer-sagan"]
    rows = run_sweep(names, [0, 1], "smoke", tmp_path)
    assert [(r["experiment"], r["seed"]) for r in rows] == [(n, s) for n in names for s in (0, 1)]
    assert json.loads((tmp_path / SWEEP_FILE).read_text()) == sorted(rows, key=lambda r: (r["experiment"], r["seed"]))
    for row in rows:
        assert 0 <= row["test_accuracy"] <= 100 and row["parameters"] > 0
        assert row["seconds_per_epoch"] > 0 and row["epochs"] == pytest.approx(4 * 16 / 64)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sweep_module, "train_experiment", refuse)
    assert run_sweep(names, [0, 1], "smoke", tmp_path) == rows
    with pytest.raises(ValueError, match="budget"):
        run_sweep(names[:1], [0], "quick", tmp_path)  # the finished run there is a smoke run
    monkeypatch.undo()

    # A killed run (no summary, a checkpoint) resumes instead of starting over or failing.
    run = tmp_path / "canvas-pointer-cnn" / "seed-0"
    for name in ("result.json", "summary.json", "model.safetensors"):
        (run / name).unlink()
    calls = []
    monkeypatch.setattr(sweep_module, "train_experiment", lambda *a, **k: calls.append(k) or train_experiment(*a, **k))
    again = run_sweep(names[:1], [0], "smoke", tmp_path)
    assert calls and calls[0]["resume"] is True
    assert again[0]["test_accuracy"] == rows[0]["test_accuracy"]


def test_summary_statistics_on_a_hand_example():
    rows = [
        {"experiment": "a", "seed": 0, "test_accuracy": 50.0, "parameters": 10, "seconds_per_epoch": 2.0},
        {"experiment": "a", "seed": 1, "test_accuracy": 60.0, "parameters": 10, "seconds_per_epoch": 4.0},
        {"experiment": "a", "seed": 2, "test_accuracy": 70.0, "parameters": 10, "seconds_per_epoch": 3.0},
        {"experiment": "b", "seed": 0, "test_accuracy": 80.0, "parameters": 12, "seconds_per_epoch": 1.0},
    ]
    a, b = summarize(rows)
    assert a["experiment"] == "a" and a["seeds"] == [0, 1, 2] and a["parameters"] == 10
    assert a["test_accuracy"] == {"mean": 60.0, "std": 10.0, "min": 50.0, "max": 70.0}  # sqrt((100+0+100)/2)
    assert a["spread"] == 20.0 and a["seconds_per_epoch"]["mean"] == 3.0
    assert b["test_accuracy"] == {"mean": 80.0, "std": 0.0, "min": 80.0, "max": 80.0}
    assert "| a | 10 | 3 | 60.0 ± 10.0 | 50.0-70.0 | 3.0 |" in format_table([a, b])


def test_sweep_refuses_unknown_names_and_bad_seeds(tmp_path):
    with pytest.raises(KeyError, match="available"):
        run_sweep(["canvas-pointer-nope"], [0], "smoke", tmp_path)
    with pytest.raises(ValueError, match="seeds"):
        run_sweep(["canvas-pointer-cnn"], [], "smoke", tmp_path)
    with pytest.raises(KeyError, match="budget"):
        run_sweep(["canvas-pointer-cnn"], [0], "huge", tmp_path)


def test_sweep_max_steps_overrides_the_budget_and_is_part_of_the_run_identity(tmp_path):
    (row,) = run_sweep(["canvas-pointer-se"], [0], "smoke", tmp_path, max_steps=2)
    assert row["steps"] == 2 and row["max_steps"] == 2
    with pytest.raises(ValueError, match="max_steps"):
        run_sweep(["canvas-pointer-se"], [0], "smoke", tmp_path)  # the finished run there has 2 steps, not 4
