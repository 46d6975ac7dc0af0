"""benchmarks/bench_compile.py: its hand-written peers compute what attnlab computes (fast, eager only), and its
``--quick`` run goes through every section and writes every row (slow: it compiles, about two minutes on one
thread). Timings are never asserted."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.bench_compile")


@pytest.mark.parametrize("masked", [False, True])
def test_self_attention_peers_agree_with_attnlab(bench, masked):
    impls, check = bench.self_cell(2, 16, bench.QUICK, masked, "cpu")
    eager = [impl for impl in impls if impl.mode == "eager"]
    _, _, outputs = bench._first_calls(eager, "cpu", [], "test")
    diffs = check(outputs, "test")  # raises unless allclose on the real query rows
    assert set(diffs) == {"attnlab/eager", "raw_sdpa/eager", "torch_mha/eager"}


def test_g2p_raw_sdpa_model_is_attnlabs_transformer(bench):
    ours, raw = bench.g2p_models(bench.QUICK, "cpu")  # raises unless the eval-mode logits agree
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in raw.parameters())


def test_additive_naive_agrees_and_tanh_passes_are_counted(bench):
    names = ("attnlab/eager", "naive/eager")
    impls, check = bench.additive_cell(1, 8, 8, "cpu", names)
    _, _, outputs = bench._first_calls(impls, "cpu", [], "test")
    check(outputs, "test")
    # attnlab's eager kernel recomputes tanh in the backward; the naive broadcast stores it
    assert bench.tanh_passes(names, "cpu") == {"attnlab/eager": 2.0, "naive/eager": 1.0}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_run_covers_every_section(tmp_path):
    out = tmp_path / "quick.json"
    command = [sys.executable, "-m", "benchmarks.bench_compile", "--quick", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=590)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["complete"] and result["quick"]
    cells = {(row["case"], row["impl"], row["mode"]) for row in result["self"]}
    for case in ("B2 T32 no mask", "B2 T32 padding mask"):
        for impl in ("attnlab", "raw_sdpa"):
            assert {(case, impl, "eager"), (case, impl, "compiled")} <= cells
    assert {(row["impl"], row["mode"]) for row in result["g2p"]} == {
        (impl, mode) for impl in ("attnlab", "raw_sdpa") for mode in ("eager", "compiled")
    }
    additive = {f"{row['impl']}/{row['mode']}" for row in result["additive"]}
    assert {"attnlab/eager", "attnlab/compiled", "naive/eager", "naive/compiled"} <= additive
    assert {row["floor"] for row in result["tanh_floor"]} == {"eager torch.tanh", "compiled fused tanh-reduction"}
    assert "### Self-attention" in run.stdout and "### tanh floor" in run.stdout
