"""`python -m attnlab.experiments.results`: the rows and tables RESULTS.md is built from."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.experiments import evaluate_model, train_experiment
from attnlab.experiments.results import bin_scores, learning_curve, main, score_source, tables

torch.set_num_threads(1)


def test_bins_pool_per_length_scores_weighted_by_items():
    by_length = {"3": {"wer_no_stress": 10.0, "words": 10}, "4": {"wer_no_stress": 40.0, "words": 30},
                 "7": {"wer_no_stress": 50.0, "words": 2}, "15": {"wer_no_stress": 100.0, "words": 1}}  # fmt: skip
    pooled = bin_scores("g2p", by_length)
    assert pooled == {"1-4": {"wer_no_stress": 32.5, "n": 40}, "7-8": {"wer_no_stress": 50.0, "n": 2},
                      "13+": {"wer_no_stress": 100.0, "n": 1}}  # fmt: skip
    pooled = bin_scores("reverse", {"10": {"accuracy": 100.0, "n": 3}, "11": {"accuracy": 0.0, "n": 1}})
    assert pooled == {"1-10": {"accuracy": 100.0, "n": 3}, "11-20": {"accuracy": 0.0, "n": 1}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "reverse"
    train_experiment("reverse-bahdanau", out, budget="smoke", max_steps=10, device="cpu", progress=False,
                     verbose=False)  # fmt: skip
    return out


def test_a_row_holds_the_same_scores_as_attnlab_eval_and_the_runs_log(run):
    row = score_source(run, beam=2, limit=24)
    direct = evaluate_model("reverse", run / "best.safetensors", limit=24, by_length=True)
    assert row["weights"].endswith("best.safetensors") and row["experiment"] == "reverse-bahdanau"
    assert row["greedy"]["accuracy"] == direct["accuracy"] and row["greedy"]["sequences"] == 24
    assert row["by_length_raw"] == direct["by_length"]
    assert sum(b["n"] for b in row["by_length"].values()) == 24
    assert row["beam2"]["sequences"] == 24
    logged = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    at_step = [e for e in logged if e["step"] == row["step"]][-1]
    assert row["train_seconds"] == at_step["train_seconds"] and row["tokens_per_s"] == at_step["tokens_per_s"]


def test_tables_and_cli(run, tmp_path, capsys):
    assert main([str(run), "--limit", "16", "--out", str(tmp_path / "rows.json")]) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert out.strip() == tables(rows)
    header, rule, line = out.splitlines()[:3]
    assert header.count("|") == rule.count("|") == line.count("|") and line.startswith("| reverse-bahdanau |")
    assert "accuracy by input length" in out
    assert main([str(tmp_path / "nothing-here")]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="one task"):
        tables([rows[0], {**rows[0], "task": "g2p"}])


def test_learning_curve_counts_the_tokens_trained_before_each_evaluation(run, capsys):
    curve = learning_curve(run)
    train = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]
    evals = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    assert [row["step"] for row in curve] == [e["step"] for e in evals]
    for row, logged in zip(curve, evals, strict=True):
        assert row["tokens"] == sum(t["tokens"] for t in train if t["step"] <= row["step"])
        assert row["accuracy"] == logged["accuracy"]
    assert main(["--curves", str(run)]) == 0
    assert capsys.readouterr().out.count("| reverse |") == len(curve)
    assert main(["--curves", str(run / "nothing")]) == 1
    assert "no train.jsonl" in capsys.readouterr().err


def test_curves_survive_a_torn_last_line_and_null_metrics_and_refuse_a_lost_training_line(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    evals = (copy / "eval.jsonl").read_text().splitlines()
    broken = json.loads(evals[-1]) | {"accuracy": None}
    (copy / "eval.jsonl").write_text("\n".join([*evals[:-1], json.dumps(broken)]) + "\n")
    with (copy / "train.jsonl").open("a") as log:
        log.write('{"step": 99999, "tok')  # a write cut short by a kill
    curve = learning_curve(copy)
    assert curve[-1]["accuracy"] is None and len(curve) == len(evals)
    assert main(["--curves", str(copy)]) == 0
    assert "accuracy n/a" in capsys.readouterr().out
    train = (copy / "train.jsonl").read_text().splitlines()[:-1]
    last = json.loads(evals[-1])["step"]
    (copy / "train.jsonl").write_text("\n".join(t for t in train if json.loads(t)["step"] != last) + "\n")
    with pytest.raises(ValueError, match=f"eval.jsonl has step {last}, train.jsonl does not"):
        learning_curve(copy)
