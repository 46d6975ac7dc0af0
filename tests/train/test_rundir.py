"""Run directories (RELIABILITY promise 9: never overwrite a run unless told to) and durable JSON-lines logs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.train.checkpoint import save_checkpoint
from attnlab.train.rundir import (
    LOCK_FILE,
    RUN_MARKER,
    NothingToResumeError,
    RunDirExistsError,
    append_jsonl,
    checkpoint_dir,
    prepare_run_dir,
    read_jsonl,
)


def _run_with_files(tmp_path: Path) -> Path:
    run = prepare_run_dir(tmp_path / "run")
    (run / "log.jsonl").write_text('{"step": 1}\n')
    return run


def test_new_run_is_created_and_marked(tmp_path):
    run = prepare_run_dir(tmp_path / "a" / "b")
    assert run == tmp_path / "a" / "b" and run.is_dir() and (run / RUN_MARKER).is_file()
    assert prepare_run_dir(run) == run  # only the marker: still counts as empty
    (tmp_path / "empty").mkdir()
    assert prepare_run_dir(tmp_path / "empty").is_dir()


def test_existing_non_empty_run_is_never_overwritten_silently(tmp_path):
    run = _run_with_files(tmp_path)
    with pytest.raises(RunDirExistsError, match=r"already exists and is not empty \(1 entries: log.jsonl\)") as info:
        prepare_run_dir(run)
    assert isinstance(info.value, FileExistsError)
    assert "--resume" in str(info.value) and "--force" in str(info.value)
    assert (run / "log.jsonl").read_text() == '{"step": 1}\n'


def test_force_clears_a_run(tmp_path):
    run = _run_with_files(tmp_path)
    (run / "sub").mkdir()
    (run / "sub" / "x").write_text("x")
    assert prepare_run_dir(run, force=True) == run
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, RUN_MARKER]  # the lock file stays (test_run_lock.py)


def test_force_refuses_unmarked_directories(tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_text("precious")
    with pytest.raises(RunDirExistsError, match=f"does not look like an attnlab run directory .*{RUN_MARKER}"):
        prepare_run_dir(mine, force=True)
    assert (mine / "holiday.jpg").read_text() == "precious"


def test_force_refuses_cwd_home_their_ancestors_roots_and_symlinks(tmp_path, monkeypatch):
    run = _run_with_files(tmp_path)
    monkeypatch.chdir(run)
    with pytest.raises(RunDirExistsError, match="current working directory"):
        prepare_run_dir(".", force=True)
    (run / "deeper").mkdir()
    monkeypatch.chdir(run / "deeper")
    with pytest.raises(RunDirExistsError, match="current working directory or contains it"):
        prepare_run_dir(run, force=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(run))
    with pytest.raises(RunDirExistsError, match="home directory"):
        prepare_run_dir("~", force=True)
    monkeypatch.setenv("HOME", str(run / "deeper"))
    with pytest.raises(RunDirExistsError, match="home directory or contains it"):
        prepare_run_dir(run, force=True)
    with pytest.raises(RunDirExistsError, match="filesystem root"):
        prepare_run_dir(Path(Path.cwd().anchor), force=True)
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    with pytest.raises(RunDirExistsError, match="symbolic link"):
        prepare_run_dir(link, force=True)
    assert (run / "log.jsonl").exists()


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(NothingToResumeError, match=r"nothing to resume .*does not exist.*without --resume") as info:
        prepare_run_dir(tmp_path / "missing", resume=True)
    assert isinstance(info.value, FileNotFoundError)
    run = _run_with_files(tmp_path)
    with pytest.raises(NothingToResumeError, match=r"no committed checkpoint in .*checkpoint"):
        prepare_run_dir(run, resume=True)
    save_checkpoint(checkpoint_dir(run), model_state={"w": torch.zeros(2)}, extra={"step": 3})
    assert prepare_run_dir(run, resume=True) == run
    assert (run / "log.jsonl").read_text() == '{"step": 1}\n'  # untouched


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="mutually exclusive"):
        prepare_run_dir(tmp_path, force=True, resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="expected a directory, found a file"):
        prepare_run_dir(tmp_path / "file", force=True)


def test_append_jsonl_round_trip(tmp_path):
    log = tmp_path / "log.jsonl"
    for step in range(3):
        append_jsonl(log, {"step": step, "loss": 1.0 / (step + 1), "tag": "é"})
    append_jsonl(log, {"step": 3, "loss": float("nan")})
    records = read_jsonl(log)
    assert [r["step"] for r in records] == [0, 1, 2, 3] and records[1]["loss"] == 0.5 and records[0]["tag"] == "é"
    assert math.isnan(records[3]["loss"])
    assert log.read_text(encoding="utf-8").count("\n") == 4


def test_torn_last_line_is_skipped_and_repaired(tmp_path):
    log = tmp_path / "log.jsonl"
    append_jsonl(log, {"step": 0})
    with open(log, "ab") as f:
        f.write(b'{"step": 1, "lo')  # a write cut short by a kill
    with pytest.warns(RuntimeWarning, match="torn last line"):
        assert read_jsonl(log) == [{"step": 0}]
    append_jsonl(log, {"step": 1})
    assert read_jsonl(log) == [{"step": 0}, {"step": 1}]
    log.write_bytes(b'{"step": 0')  # torn with no complete line before it
    append_jsonl(log, {"step": 0})
    assert log.read_bytes() == b'{"step":0}\n'


def test_jsonl_errors(tmp_path):
    log = tmp_path / "log.jsonl"
    with pytest.raises(TypeError, match=r"record: expected JSON-able values.*int64"):
        append_jsonl(log, {"step": np.int64(1)})
    with pytest.raises(TypeError, match="record: expected a mapping"):
        append_jsonl(log, [1, 2])
    log.write_text('{"step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        read_jsonl(log)
