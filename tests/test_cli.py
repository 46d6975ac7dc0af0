"""The command line: bad usage exits non-zero (the tour itself is tested in tests/lab/test_tour.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest


def test_console_script_exits_nonzero_on_bad_usage():
    result = subprocess.run([sys.executable, "-m", "attnlab.cli", "no-such-command"], capture_output=True, text=True)
    assert result.returncode != 0 and "invalid choice" in result.stderr


def test_bench_reports_a_failing_benchmark_in_one_line(monkeypatch, capsys):
    from attnlab import cli

    monkeypatch.setitem(cli.BENCH_SUITES, "self", ["benchmarks.no_such_benchmark"])
    assert cli.main(["bench", "--suite", "self", "--rounds", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "attnlab bench: error: the self benchmark exited with status 1"


def test_bench_runs_a_benchmark_and_prints_its_table(monkeypatch, capfd):
    from attnlab import cli

    if importlib.util.find_spec("timm") is None:  # the vision peer comes from the bench extra
        pytest.skip("timm is not installed (pip install -e '.[bench]')")
    assert cli.main(["bench", "--suite", "vision", "--sizes", "8", "--rounds", "1"]) == 0
    out = capfd.readouterr().out
    assert "## vision" in out and "timm" in out and "|" in out
