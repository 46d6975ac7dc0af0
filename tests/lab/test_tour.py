"""``attnlab tour``: every claim measured, judged, written to results.json and report.html; reruns skip work;
an interruption keeps what was finished."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from attnlab.cli import main
from attnlab.lab import tour as tour_module
from attnlab.lab.claims._common import diagonality, steps_to
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
        assert result.tables and all(table.rows for table in result.tables), result.number
        assert result.figures, result.number
        for figure in result.figures:
            assert (out / figure.file).read_bytes().startswith(b"\x89PNG"), figure.file
        assert result.budget == "smoke" and result.command.endswith(f"--claims {result.number}")
    saved = json.loads((out / "results.json").read_text())
    assert json.dumps(saved, sort_keys=True) == json.dumps(results, sort_keys=True)  # (NaN != NaN as values)
    html = (out / "report.html").read_text()
    assert [int(n) for n in re.findall(r'<section [^>]*id="claim-(\d+)"', html)] == list(range(1, 14))


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


def test_all_thirteen_claims_are_registered():
    tour_module._load_claims()
    assert sorted(CLAIMS) == list(range(1, 14))
    assert all(claim.statement and claim.title for claim in CLAIMS.values())


def test_measures_used_by_the_verdicts():
    history = [{"accuracy": 10.0, "step": 50}, {"accuracy": 60.0, "step": 100}]
    assert steps_to(history, "accuracy", 50.0) == 100 and steps_to(history, "accuracy", 61.0) is None
    assert diagonality(np.eye(4)) == 1.0 and diagonality(np.eye(4)[::-1].copy()) == 0.0
    assert _locality(np.eye(5)) == 1.0
    uniform = np.full((4, 4), 0.25)
    assert _locality(uniform) == pytest.approx(10 / 16)  # 4 + 3 + 3 cells within +-1 of the diagonal
