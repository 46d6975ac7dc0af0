"""The command line: ``attnlab tour`` runs offline and reports what it claims."""

from __future__ import annotations

import subprocess
import sys

from attnlab.cli import main


def test_tour_runs_and_reports_equivalence(capsys):
    assert main(["tour"]) == 0
    out = capsys.readouterr().out
    assert "SelfAttention(x) == CrossAttention(x, context=x): True" in out
    for name in ("dot", "scaled_dot", "general", "additive", "cosine", "location"):
        assert f"   {name} " in out


def test_console_script_exits_nonzero_on_bad_usage():
    result = subprocess.run([sys.executable, "-m", "attnlab.cli", "no-such-command"], capture_output=True, text=True)
    assert result.returncode != 0 and "invalid choice" in result.stderr
