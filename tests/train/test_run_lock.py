"""One writer per run directory: a second process that would train, resume or --force the same directory is
refused at its start with a clear error, and the first one loses no checkpoint (see attnlab.train.rundir)."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import filelock
import pytest
import torch
from torch import nn

from attnlab.seq.loss import TokenLoss
from attnlab.train.checkpoint import read_checkpoint
from attnlab.train.rundir import (
    LOCK_FILE,
    RUN_MARKER,
    RunDirExistsError,
    RunDirLockedError,
    checkpoint_dir,
    lock_run_dir,
    prepare_run_dir,
)
from attnlab.train.trainer import TrainConfig, TrainData, Trainer

LOCKED = "is locked: another process is writing it"


class _Lines:
    """The lines of a child's stdout, read by a thread, so that every wait has a deadline."""

    def __init__(self, stream) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []

        def pump() -> None:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
            self._queue.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, prefix: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no line starting with {prefix!r} within {timeout} s; saw {self.seen[-5:]}"
                ) from None
            if line is None:
                raise AssertionError(f"the writer exited before printing {prefix!r}; saw {self.seen[-5:]}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def saves(self) -> list[int]:
        return [int(line.split()[1]) for line in self.seen if line.startswith("saved")]


def _second_writer(run: Path, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "attnlab", "train", "g2p-transformer", "--budget", "smoke", "--out", str(run)]
    return subprocess.run([*command, *flags], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.timeout(300)
def test_a_second_writer_is_refused_while_the_first_loses_no_save(tmp_path):
    run = tmp_path / "run"
    helper = Path(__file__).with_name("_locked_writer.py")
    first = subprocess.Popen([sys.executable, str(helper), str(run)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        lines = _Lines(first.stdout)
        lines.until("locked")
        lines.until("saved")
        for flags in (("--resume",), ("--force",), ()):  # continue it, delete it, or start a run in it
            before = len(lines.saves())
            refused = _second_writer(run, *flags)
            assert refused.returncode == 1, (flags, refused.stderr)
            err = refused.stderr.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("attnlab train: error: RunDirLockedError: "), err
            assert f"run directory {run} {LOCKED}" in err[0] and "Traceback" not in refused.stderr
            lines.until("saved")  # the first writer was still saving while the second was refused
            assert len(lines.saves()) > before
        first.stdin.write("stop\n")
        first.stdin.flush()
        lines.until("released")
        assert first.wait(timeout=60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    saved = lines.saves()
    assert saved == list(range(len(saved))) and len(saved) >= 4
    # Every save of the first writer is there and intact (each snapshot verified by its SHA-256s), in order.
    steps = []
    for snapshot in sorted(checkpoint_dir(run).glob("ckpt-*")):
        got = read_checkpoint(snapshot)
        step = got.extra["step"]
        assert torch.equal(got.model_state["w"], torch.full((1024,), float(step)))
        assert torch.equal(got.extra["check"], torch.full((256,), step, dtype=torch.int64))
        steps.append(step)
    assert steps == saved
    assert read_checkpoint(checkpoint_dir(run)).extra["step"] == saved[-1]
    assert not list(checkpoint_dir(run).glob(".tmp-*"))  # nobody else's save left a temp directory
    # Released at the end: the directory can be written again.
    assert prepare_run_dir(run, resume=True) == run


def test_lock_is_reentrant_in_its_thread_refused_elsewhere_and_released_on_errors(tmp_path):
    run = prepare_run_dir(tmp_path / "run")
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            with lock_run_dir(run):
                pass
        except BaseException as error:
            errors.append(error)

    with lock_run_dir(run), lock_run_dir(run):  # re-entrant: prepare_run_dir inside a caller's lock
        assert prepare_run_dir(run) == run
        with pytest.raises(filelock.Timeout):  # the OS lock itself: what another process meets
            filelock.FileLock(run / LOCK_FILE, timeout=0).acquire()
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1 and isinstance(errors[0], RunDirLockedError)
    assert "another thread of this process" in str(errors[0]) and isinstance(errors[0], RuntimeError)
    with pytest.raises(KeyError), lock_run_dir(run):
        raise KeyError("boom")
    with lock_run_dir(run):  # released by the exception
        pass
    with pytest.raises(FileNotFoundError, match="expected an existing directory to lock"), lock_run_dir(tmp_path / "x"):
        pass


def test_the_lock_file_is_no_content_and_survives_force(tmp_path):
    run = prepare_run_dir(tmp_path / "run")
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, RUN_MARKER]
    assert prepare_run_dir(run) == run  # marker and lock file only: still empty
    inode = (run / LOCK_FILE).stat().st_ino
    (run / "train.jsonl").write_text('{"step": 1}\n')
    (run / "checkpoint").mkdir()
    with pytest.raises(RunDirExistsError, match=r"\(2 entries: checkpoint, train.jsonl\)"):
        prepare_run_dir(run)
    prepare_run_dir(run, force=True)
    # The same lock file: a writer waiting on it and one arriving after the force lock one file, not two.
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, RUN_MARKER]
    assert (run / LOCK_FILE).stat().st_ino == inode
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_text("precious")
    for force in (False, True):
        with pytest.raises(RunDirExistsError):
            prepare_run_dir(mine, force=force)
    assert sorted(p.name for p in mine.iterdir()) == ["holiday.jpg"]  # no lock file left in someone else's folder


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Linear(2, 1)


def _os_lock_is_held(run: Path) -> bool:
    """Whether someone holds the run directory's OS lock (a fresh lock of the file, as another process takes it)."""
    probe = filelock.FileLock(run / LOCK_FILE, timeout=0)
    try:
        probe.acquire()
    except filelock.Timeout:
        return True
    probe.release()
    return False


def test_fit_holds_the_lock_for_the_whole_run_and_releases_it_also_on_failure(tmp_path):
    run = prepare_run_dir(tmp_path / "run")
    held: list[bool] = []  # at each training step: is the lock held?
    crash_at = [4]

    def loss_fn(model, batch):
        held.append(_os_lock_is_held(run))
        if len(held) == crash_at[0]:
            raise ValueError("simulated crash")
        return TokenLoss((model.w(batch) ** 2).sum(), torch.tensor(batch.shape[0]))

    def trainer() -> Trainer:
        data = TrainData([torch.tensor([float(i), 1.0]) for i in range(8)], [1] * 8, torch.stack)
        config = TrainConfig(max_steps=6, batch_size=4, checkpoint_every=2, eval_every=100)
        return Trainer(_Tiny(), config, data, run, loss_fn=loss_fn, progress=False, verbose=False)

    with pytest.raises(ValueError, match="simulated crash"):
        trainer().fit()
    assert held == [True] * 4 and not _os_lock_is_held(run)  # released by the crash
    crash_at[0] = 0
    assert trainer().fit(resume=True).step == 6  # resumes from the checkpoint at step 2
    assert held == [True] * 8 and not _os_lock_is_held(run)  # held for every step, released at the end
    latest = (checkpoint_dir(run) / "LATEST").read_bytes()
    outcome: list[BaseException] = []

    def second_writer() -> None:
        try:
            trainer().fit(resume=True)
        except BaseException as error:
            outcome.append(error)

    with lock_run_dir(run):  # someone else writes the run: a Trainer is refused before it reads or writes
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join()
    assert len(outcome) == 1 and isinstance(outcome[0], RunDirLockedError) and len(held) == 8
    assert (checkpoint_dir(run) / "LATEST").read_bytes() == latest
