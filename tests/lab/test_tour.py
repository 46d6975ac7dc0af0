"""``attnlab tour``: every claim measured, judged, written to results.json and report.html; reruns skip work;
an interruption keeps what was finished."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from attnlab.cli import main
from attnlab.lab import tour as tour_module
from attnlab.lab.claims._common import (
    Comparison,
    comparative,
    diagonality,
    mean_spread,
    possibility,
    spread,
    steps_to,
)
from attnlab.lab.claims.text import _locality
from attnlab.lab.evidence import ClaimResult, Figure, Table, Verdict
from attnlab.lab.tour import CLAIMS, run_tour

VERDICTS = {"holds", "does not hold", "inconclusive"}
# The session fixture runs the whole smoke tour inside the first test that uses it (under a minute on a quiet
# machine; much longer when the cores are shared).
pytestmark = pytest.mark.timeout(1200)


def test_every_claim_is_measured_judged_and_reported(smoke_tour):
    out, results = smoke_tour
    numbers = [entry["number"] for entry in results["claims"]]
    assert numbers == list(range(1, 14))
    failed = {entry["number"]: entry["error"] for entry in results["claims"] if "error" in entry}
    assert not failed, failed
    for entry in results["claims"]:
        result = ClaimResult.from_json(entry)
        assert result.verdict.status in VERDICTS and result.verdict.because
        assert result.criterion and result.criterion == CLAIMS[result.number].criterion, result.number
        assert bool(result.verdict.decides) == (result.verdict.status == "inconclusive"), result.verdict
        assert result.tables and all(table.rows for table in result.tables), result.number
        assert result.figures, result.number
        for figure in result.figures:
            assert (out / figure.file).read_bytes().startswith(b"\x89PNG"), figure.file
        assert result.budget == "smoke" and result.command.endswith(f"--claims {result.number}")
    saved = json.loads((out / "results.json").read_text())
    assert json.dumps(saved, sort_keys=True) == json.dumps(results, sort_keys=True)  # (NaN != NaN as values)
    html = (out / "report.html").read_text()
    assert [int(n) for n in re.findall(r'<section [^>]*id="claim-(\d+)"', html)] == list(range(1, 14))
    assert html.count('<p class="criterion"><strong>Criterion:</strong> ') == 13
    assert "none recorded" not in html


def test_comparative_claims_rest_on_three_seeds_and_claim_11_on_a_throughput_map(smoke_tour):
    out, results = smoke_tour
    by_number = {entry["number"]: entry for entry in results["claims"]}
    for label in ("no attention", "Bahdanau attention"):
        assert len(by_number[10]["numbers"][label]["long_accuracy_per_seed"]) == 3
    assert (out / "runs" / "smoke" / "reverse-rnn-seed-2" / "model.safetensors").is_file()
    speed = by_number[11]["numbers"]
    assert len(speed["Transformer"]["seconds_to_target_per_seed"]) == 3
    cells = speed["throughput_map"]
    assert {cell["length"] for cell in cells} == {8, 32} and {"1", "4"} <= {cell["batch_kind"] for cell in cells}
    assert all(rate > 0 for cell in cells for rate in cell["tokens_per_s"].values())
    assert any(table["columns"][-1] == "Transformer faster" for table in by_number[11]["tables"])
    assert (
        "where self-attention is faster up to the longest length: 1 thread: batch 1 "
        in by_number[11]["verdict"]["because"]
    )
    assert by_number[13]["verdict"]["status"] == "inconclusive"  # one seed below the full budget: cannot decide


def test_the_structural_claims_hold_with_the_published_counts(smoke_tour):
    _, results = smoke_tour
    by_number = {entry["number"]: entry for entry in results["claims"]}
    assert by_number[3]["numbers"]["transformer-base"]["self"] == 12
    assert by_number[3]["numbers"]["transformer-base"]["cross"] == 6
    assert (by_number[3]["numbers"]["bert-base"]["self"], by_number[3]["numbers"]["bert-base"]["cross"]) == (12, 0)
    assert (by_number[3]["numbers"]["rnnsearch"]["self"], by_number[3]["numbers"]["rnnsearch"]["cross"]) == (0, 1)
    for number in (1, 2, 3, 12):  # independent of training: must hold at any budget
        assert by_number[number]["verdict"]["status"] == "holds", by_number[number]["verdict"]


def test_a_rerun_skips_finished_claims_and_trains_nothing(smoke_tour, monkeypatch):
    out, results = smoke_tour
    trained = []
    monkeypatch.setattr(tour_module, "train_experiment", lambda *a, **k: trained.append(a) or None)
    again = run_tour(out, budget="smoke", progress=False, log=lambda line: None)
    assert trained == []
    assert [e["verdict"] for e in again["claims"]] == [e["verdict"] for e in results["claims"]]


def test_an_interrupted_tour_keeps_finished_claims_and_continues(tmp_path, monkeypatch):
    calls = []

    def measure(number):
        def run(tour):
            calls.append(number)
            if number == 2 and calls.count(2) == 1:
                raise KeyboardInterrupt
            path, name = tour.figure(f"c{number}")
            path.write_bytes(b"\x89PNG\r\n\x1a\n")
            return Verdict("holds", "ok"), [Table("t", ["a"], [[number]])], [Figure(name, "f")], {"n": number}

        return run

    fake = {n: tour_module.Claim(n, f"claim {n}", "s", measure(n)) for n in (1, 2, 3)}
    monkeypatch.setattr(tour_module, "CLAIMS", fake)
    monkeypatch.setattr(tour_module, "_load_claims", lambda: None)
    with pytest.raises(KeyboardInterrupt):
        run_tour(tmp_path, budget="smoke", progress=False, log=lambda line: None)
    assert [e["number"] for e in json.loads((tmp_path / "results.json").read_text())["claims"]] == [1]
    results = run_tour(tmp_path, budget="smoke", progress=False, log=lambda line: None)
    assert calls == [1, 2, 2, 3]  # claim 1 was not measured again
    assert [e["number"] for e in results["claims"]] == [1, 2, 3]


def test_a_failing_claim_is_recorded_and_the_tour_goes_on(tmp_path, monkeypatch):
    def broken(tour):
        raise ValueError("no data")

    def fine(tour):
        return Verdict("does not hold", "numbers"), [Table("t", ["a"], [[1]])], [], {}

    monkeypatch.setattr(tour_module, "CLAIMS", {1: tour_module.Claim(1, "a", "s", broken),
                                                2: tour_module.Claim(2, "b", "s", fine)})  # fmt: skip
    monkeypatch.setattr(tour_module, "_load_claims", lambda: None)
    results = run_tour(tmp_path, budget="smoke", progress=False, log=lambda line: None)
    assert results["claims"][0]["error"] == "ValueError: no data"
    assert results["claims"][1]["verdict"]["status"] == "does not hold"
    assert 'id="claim-1"' in (tmp_path / "report.html").read_text()
    assert not (tmp_path / "claims" / "claim-1.json").exists()  # a failed claim is measured again next time


def test_trainings_run_ahead_in_workers_and_a_failed_one_fails_only_its_claim(tmp_path, monkeypatch):
    def reads(experiment):
        def run(tour):
            loaded = tour.model(experiment)
            return Verdict("holds", experiment), [Table("t", ["a"], [[type(loaded.model).__name__]])], [], {}

        return run

    fake = {
        1: tour_module.Claim(1, "a", "s", reads("no-such-experiment"), trains=["no-such-experiment"]),
        2: tour_module.Claim(2, "b", "s", reads("reverse-rnn"), trains=["reverse-rnn"]),
    }
    monkeypatch.setattr(tour_module, "CLAIMS", fake)
    monkeypatch.setattr(tour_module, "_load_claims", lambda: None)
    lines = []
    results = run_tour(tmp_path, budget="smoke", progress=False, log=lines.append, jobs=2)
    assert any("2 worker processes" in line for line in lines), lines
    assert "no-such-experiment" in results["claims"][0]["error"]
    assert results["claims"][1]["verdict"]["status"] == "holds"
    assert (tmp_path / "runs" / "smoke" / "reverse-rnn" / "model.safetensors").is_file()


def test_the_tour_refuses_unknown_claims_and_budgets(tmp_path):
    with pytest.raises(ValueError, match="jobs"):
        run_tour(tmp_path, jobs=0)
    with pytest.raises(ValueError, match="unknown claim"):
        run_tour(tmp_path, claims=[14])
    with pytest.raises(ValueError, match="budget"):
        run_tour(tmp_path, budget="huge")
    assert main(["tour", "--out", str(tmp_path), "--claims", "99"]) == 1


def test_all_thirteen_claims_are_registered_with_a_criterion():
    tour_module._load_claims()
    assert sorted(CLAIMS) == list(range(1, 14))
    assert all(claim.statement and claim.title and claim.criterion for claim in CLAIMS.values())
    with pytest.raises(ValueError, match="criterion"):
        tour_module.claim(99, "t", "s", criterion=" ")


def test_a_finished_claim_judged_by_another_criterion_is_measured_again(tmp_path, monkeypatch):
    calls = []

    def measure(tour):
        calls.append(1)
        return Verdict("holds", "ok"), [Table("t", ["a"], [[1]])], [], {}

    monkeypatch.setattr(tour_module, "_load_claims", lambda: None)
    monkeypatch.setattr(tour_module, "CLAIMS", {1: tour_module.Claim(1, "a", "s", measure, criterion="old")})
    run_tour(tmp_path, budget="smoke", progress=False, log=lambda line: None)
    run_tour(tmp_path, budget="smoke", progress=False, log=lambda line: None)
    assert len(calls) == 1
    monkeypatch.setattr(tour_module, "CLAIMS", {1: tour_module.Claim(1, "a", "s", measure, criterion="new")})
    results = run_tour(tmp_path, budget="smoke", progress=False, log=lambda line: None)
    assert len(calls) == 2 and results["claims"][0]["criterion"] == "new"


def test_results_saved_before_criteria_still_load():
    old = {"number": 1, "title": "t", "statement": "s", "verdict": {"status": "holds", "because": "b"},
           "budget": "quick", "command": "c"}  # fmt: skip
    result = ClaimResult.from_json(old)
    assert result.criterion == "" and result.verdict.decides == ""
    assert ClaimResult.from_json(result.to_json()) == result
    old["verdict"] = {"status": "inconclusive", "because": "b"}
    assert "older attnlab" in ClaimResult.from_json(old).verdict.decides


def test_an_inconclusive_verdict_says_what_would_decide_it():
    with pytest.raises(ValueError, match="decide"):
        Verdict("inconclusive", "too few seeds")
    with pytest.raises(ValueError, match="inconclusive"):
        Verdict("holds", "b", decides="more seeds")
    with pytest.raises(ValueError, match="status"):
        Verdict("maybe", "b")
    assert Verdict.inconclusive("b", "more seeds").status == "inconclusive"


def test_seeds_name_their_runs_and_expand_a_claims_trainings(tmp_path):
    tour = tour_module.Tour(tmp_path, budget="quick", seed=5)
    assert tour.seeds({"smoke": 1, "quick": 3, "full": 3}) == [5, 6, 7] and tour.seeds(1) == [5]
    assert tour.run_dir("reverse-rnn").name == tour.run_dir("reverse-rnn", seed=5).name == "reverse-rnn"
    assert tour.run_dir("reverse-rnn", seed=6).name == "reverse-rnn-seed-6"
    assert tour.run_dir("g2p-transformer", max_steps=500, seed=7).name == "g2p-transformer-500-steps-seed-7"
    spec = tour_module.Claim(1, "a", "s", lambda t: None, trains=["x", ("y", 10)], seeds={"quick": 2})
    assert spec.trainings(tour) == [("x", None, 5), ("y", 10, 5), ("x", None, 6), ("y", 10, 6)]
    with pytest.raises(ValueError, match="seeds"):
        tour.seeds(0)


def test_a_comparison_decides_only_beyond_the_seed_spread():
    assert spread([1.0]) == 0.0 and spread([1.0, 3.0]) == pytest.approx(2**0.5)
    assert mean_spread([50.0, 52.0, 54.0], unit="%") == "52.0 +- 2.0%" and mean_spread([7.0]) == "7.0 (1 seed)"
    assert Comparison.of([90, 91, 92], [50, 52, 54], 10).outcome == "ahead"
    assert Comparison.of([50, 52, 54], [90, 91, 92], 10).outcome == "behind"
    assert Comparison.of([55, 60, 65], [50, 52, 54], 2).outcome == "level"  # +8 against 2 x 5.0 of spread
    assert Comparison.of([90, 91], [50, 52], 10).outcome == "too few seeds"
    assert comparative(10, "ahead", "b", budget="quick").status == "holds"
    assert comparative(10, "behind", "b", budget="quick").status == "does not hold"
    level = comparative(10, "level", "b", budget="quick")
    assert level.status == "inconclusive" and "--budget full --claims 10" in level.decides
    assert "3 seeds" in comparative(13, "too few seeds", "b", budget="quick").decides


def test_a_possibility_not_shown_is_inconclusive_below_the_full_budget(tmp_path):
    quick, full = tour_module.Tour(tmp_path, budget="quick"), tour_module.Tour(tmp_path, budget="full")
    assert possibility(quick, 9, True, "b").status == "holds"
    assert possibility(quick, 9, False, "b").status == "inconclusive"
    assert possibility(full, 9, False, "b").status == "does not hold"


def test_measures_used_by_the_verdicts():
    history = [{"accuracy": 10.0, "step": 50}, {"accuracy": 60.0, "step": 100}]
    assert steps_to(history, "accuracy", 50.0) == 100 and steps_to(history, "accuracy", 61.0) is None
    assert diagonality(np.eye(4)) == 1.0 and diagonality(np.eye(4)[::-1].copy()) == 0.0
    assert _locality(np.eye(5)) == 1.0
    uniform = np.full((4, 4), 0.25)
    assert _locality(uniform) == pytest.approx(10 / 16)  # 4 + 3 + 3 cells within +-1 of the diagonal
