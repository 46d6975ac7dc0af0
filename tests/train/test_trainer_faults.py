"""``attnlab train`` end to end, killed with SIGKILL and resumed (RELIABILITY promises 8-10; issue 6 items 4-5).

Every run is a real CLI invocation (``attnlab.cli.main``) in a forked child of ``_train_server.py``, on the
``g2p-transformer`` smoke budget: 20 steps, a checkpoint every 5, a dev evaluation every 10.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from attnlab.cli import main
from attnlab.train.checkpoint import load_tensors

SERVER = Path(__file__).with_name("_train_server.py")
TRAIN = ["train", "g2p-transformer", "--budget", "smoke", "--device", "cpu"]
TIMING_FIELDS = {"train_seconds", "tokens_per_s"}


class Server:
    """The fork server: ``run(argv, kill)`` returns the child's wait status."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._next(120) == "ready"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def _next(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the train server said nothing for {timeout} s") from None

    def run(self, argv: list[str], kill: dict | None = None, on_start=None) -> int:
        self.proc.stdin.write(json.dumps({"argv": argv, "kill": kill}) + "\n")
        self.proc.stdin.flush()
        kind, pid = self._next(60).split()
        assert kind == "started"
        if on_start is not None:
            on_start(int(pid))
        kind, dead_pid, status = self._next(120).split()
        assert (kind, dead_pid) == ("dead", pid)
        return int(status)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def exited_ok(status: int) -> bool:
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def same_weights(a: Path, b: Path) -> bool:
    """Bit-identical tensors (same names, dtypes, shapes, bytes) and equal metadata. The files' bytes can differ:
    safetensors writes its metadata map in a per-process hash order."""
    (ta, ma), (tb, mb) = load_tensors(a), load_tensors(b)
    return (
        ma == mb
        and ta.keys() == tb.keys()
        and all(ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape and torch.equal(ta[k], tb[k]) for k in ta)
    )


def eval_log(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS}
            for line in (run / "eval.jsonl").read_text().splitlines()]  # fmt: skip


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory) -> Path:
    """One uninterrupted smoke run."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert exited_ok(server.run([*TRAIN, "--out", str(run)]))
    return run


def test_smoke_run_writes_weights_logs_and_an_eval_line(reference, capsys):
    for name in ("model.safetensors", "best.safetensors", "train.jsonl", "eval.jsonl", "summary.json", "run.json"):
        assert (reference / name).is_file(), name
    steps = [json.loads(line)["step"] for line in (reference / "train.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 21))
    assert [r["step"] for r in eval_log(reference)] == [10, 20]
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["step"] == 20 and summary["stop_reason"] == "max_steps"

    assert main(["eval", "g2p", "--model", str(reference), "--split", "dev", "--limit", "24", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    scores = json.loads(out[0])
    assert scores["words"] == 24 and scores["task"] == "g2p" and scores["decode"] == "greedy"
    assert 0.0 <= scores["wer_no_stress"] <= 100.0 and 0.0 <= scores["wer"] <= 100.0
    assert scores["per"] >= 0.0 and scores["per_no_stress"] >= 0.0
    assert scores["wer_no_stress"] <= scores["wer"]


def test_sigkill_at_many_points_then_resume_is_bit_identical(server, reference, tmp_path):
    run = tmp_path / "run"
    out = ["--out", str(run)]

    def kill_when_logged(pid: int, lines: int = 3) -> None:
        deadline = time.monotonic() + 60
        log = run / "train.jsonl"
        while time.monotonic() < deadline:
            if log.exists() and log.read_bytes().count(b"\n") >= lines:
                break
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)

    # 1. an external SIGKILL at whatever the run is doing after its third logged step
    status = server.run([*TRAIN, *out], on_start=kill_when_logged)
    resume = [*TRAIN, *out, "--resume"]
    if exited_ok(status):  # the whole run beat the kill: start the interrupted sequence over
        pytest.skip("the run finished before the external kill landed")
    assert killed(status)
    # 2. between checkpoints: right after step 7 is logged (checkpoint at 5)
    assert killed(server.run(resume, {"after_step": 7}))
    # 3. inside a checkpoint save: half of the step-10 snapshot's state.safetensors written
    assert killed(server.run(resume, {"write": "state.safetensors", "nth": 1}))
    # 4. inside the write of best.safetensors at the step-10 evaluation
    assert killed(server.run(resume, {"write": "best.safetensors", "nth": 1}))
    assert list(run.glob(".best.safetensors.tmp-*")), "the killed write should have left its temp file"
    # 5. halfway through the log line of step 13: a torn last line
    assert killed(server.run(resume, {"torn_step": 13}))
    assert not (run / "train.jsonl").read_bytes().endswith(b"\n")
    # 6. inside the commit of the final checkpoint (LATEST written at steps 15 and 20)
    assert killed(server.run(resume, {"write": "LATEST", "nth": 2}))
    # 7. after the final checkpoint, inside the write of model.safetensors
    assert killed(server.run(resume, {"write": ".model.safetensors.tmp", "nth": 1}))
    assert not (run / "model.safetensors").exists()
    # 8. resume to the end
    assert exited_ok(server.run(resume))

    assert same_weights(run / "model.safetensors", reference / "model.safetensors")
    assert same_weights(run / "best.safetensors", reference / "best.safetensors")
    assert (run / "train.jsonl").read_bytes() == (reference / "train.jsonl").read_bytes()
    assert eval_log(run) == eval_log(reference)
    assert not list(run.glob(".*.tmp-*"))
    # a finished run resumes to the same end without training
    assert exited_ok(server.run(resume))
    assert same_weights(run / "model.safetensors", reference / "model.safetensors")


def test_same_seed_is_bit_identical_and_another_seed_is_not(server, reference, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    assert exited_ok(server.run([*TRAIN, "--out", str(again)]))
    assert same_weights(again / "model.safetensors", reference / "model.safetensors")
    assert same_weights(again / "best.safetensors", reference / "best.safetensors")
    assert (again / "train.jsonl").read_bytes() == (reference / "train.jsonl").read_bytes()
    assert exited_ok(server.run([*TRAIN, "--out", str(other), "--seed", "1", "--max-steps", "5"]))
    first = (other / "train.jsonl").read_text().splitlines()[0]
    assert first != (reference / "train.jsonl").read_text().splitlines()[0]


def test_existing_run_dir_is_refused_without_force(reference, capsys):
    before = (reference / "model.safetensors").read_bytes()
    assert main([*TRAIN, "--out", str(reference)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--force" in err[0] and "--resume" in err[0]
    assert (reference / "model.safetensors").read_bytes() == before


def test_resume_refuses_settings_that_contradict_the_run(reference, capsys):
    assert main([*TRAIN, "--out", str(reference), "--resume", "--seed", "3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed 3" in err[0] and "started with 0" in err[0]
    with pytest.raises(SystemExit) as exit_info:  # argparse: --resume and --force are mutually exclusive
        main([*TRAIN, "--out", str(reference), "--resume", "--force"])
    assert exit_info.value.code != 0


def test_resume_without_a_run_says_so(tmp_path, capsys):
    assert main([*TRAIN, "--out", str(tmp_path / "none"), "--resume"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to resume" in err[0]


def test_resume_from_a_tampered_checkpoint_fails_in_one_line(reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    (snapshot,) = (run / "checkpoint").glob("ckpt-*")
    data = bytearray((snapshot / "state.safetensors").read_bytes())
    data[-1] ^= 0x01
    (snapshot / "state.safetensors").write_bytes(bytes(data))
    assert main([*TRAIN, "--out", str(run), "--resume"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "state.safetensors: SHA-256 mismatch" in err[0]
