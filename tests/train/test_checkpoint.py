"""Checkpoints (RELIABILITY promises 7 and 8): bit-identical resume, RNG round trip, integrity, no unpickling,
atomic saves that survive SIGKILL at any moment."""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import pickle
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnlab.train.checkpoint as ckpt_mod
from attnlab.train.checkpoint import (
    LATEST,
    MANIFEST,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    CheckpointNotFoundError,
    apply_model_state,
    capture_rng_state,
    has_checkpoint,
    load_checkpoint,
    load_metadata,
    load_tensors,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
    save_tensors,
)

# ----------------------------------------------------------------------------------------------------------
# Bit-identical resume
# ----------------------------------------------------------------------------------------------------------


class _Half:
    """An LR lambda object: LambdaLR saves its __dict__ (here a float), so its state must be JSON-able."""

    def __init__(self) -> None:
        self.rate = 0.5

    def __call__(self, epoch: int) -> float:
        return self.rate ** (epoch / 10)


def _build(seed: int, optimizer: str, scheduler: str):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Dropout(0.2), nn.Linear(32, 3))
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, amsgrad=True)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    sched = {
        "onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=40),
        "lambda": lambda: torch.optim.lr_scheduler.LambdaLR(opt, _Half()),
        "plateau": lambda: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5),
    }[scheduler]()
    return model, opt, sched


def _train(model: nn.Module, opt, sched, steps: int) -> None:
    for _ in range(steps):
        # Every global RNG takes part: torch (data, dropout), Python random and numpy (loss weights).
        x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
        weight = 0.5 + random.random() + float(np.random.rand())
        loss = weight * F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(loss.item())
        else:
            sched.step()


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


@pytest.mark.parametrize(("optimizer", "scheduler"), [("adamw", "onecycle"), ("sgd", "lambda"), ("adamw", "plateau")])
def test_resume_continues_bit_identically(tmp_path, optimizer, scheduler):
    n, m = 7, 9
    _seed_all(0)
    ref_model, ref_opt, ref_sched = _build(0, optimizer, scheduler)
    _train(ref_model, ref_opt, ref_sched, n + m)

    _seed_all(0)
    model, opt, sched = _build(0, optimizer, scheduler)
    _train(model, opt, sched, n)
    save_checkpoint(tmp_path / "ckpt", model_state=model.state_dict(), optimizer=opt, scheduler=sched,
                    extra={"step": n})  # fmt: skip

    _seed_all(99)  # the resumed process starts with other RNG states and other weights
    model2, opt2, sched2 = _build(1, optimizer, scheduler)
    extra = load_checkpoint(tmp_path / "ckpt", model=model2, optimizer=opt2, scheduler=sched2)
    assert extra == {"step": n}
    _train(model2, opt2, sched2, m)

    for (name, want), got in zip(ref_model.named_parameters(), model2.parameters(), strict=True):
        assert torch.equal(want, got), name
    for want, got in zip(ref_opt.state.values(), opt2.state.values(), strict=True):
        for key in want:
            assert torch.equal(torch.as_tensor(want[key]), torch.as_tensor(got[key])), key
    assert ref_sched.state_dict().keys() == sched2.state_dict().keys()
    assert ref_opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def test_rng_round_trip(tmp_path):
    save_checkpoint(tmp_path, model_state={}, extra={})
    want = (torch.rand(5), torch.randn(3, dtype=torch.float64), random.random(), random.gauss(0, 1), np.random.rand(4))
    _seed_all(7)
    load_checkpoint(tmp_path)
    got = (torch.rand(5), torch.randn(3, dtype=torch.float64), random.random(), random.gauss(0, 1), np.random.rand(4))
    assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    assert want[2:4] == got[2:4]
    assert np.array_equal(want[4], got[4])


def test_rng_capture_restore_in_memory():
    np.random.randn()  # leave a cached gaussian in numpy's state
    state = capture_rng_state()
    want = (torch.randint(0, 1000, (8,)), random.getrandbits(64), np.random.randn(3))
    restore_rng_state(state)
    got = (torch.randint(0, 1000, (8,)), random.getrandbits(64), np.random.randn(3))
    assert torch.equal(want[0], got[0]) and want[1] == got[1] and np.array_equal(want[2], got[2])


def test_extra_round_trips_exactly(tmp_path):
    perm = torch.randperm(10)
    extra = {
        "step": 12,
        "config": {"lr": 0.1 + 0.2, "dims": (4, 8), "name": "tiny", "flags": [True, False, None]},
        "data_position": {0: 3, 1: (4, 5)},  # int keys and tuples survive
        "loss_log": [2.5, float("nan"), float("inf"), -float("inf")],
        "perm": perm,  # tensors go to state.safetensors
        "looks_tagged": {"__tuple__": [1, 2]},  # a user dict shaped like a tag stays a dict
    }
    save_checkpoint(tmp_path, model_state={}, extra=extra, rng=False)
    got = load_checkpoint(tmp_path, restore_rng=False)
    assert got["step"] == 12 and got["config"] == extra["config"] and got["data_position"] == {0: 3, 1: (4, 5)}
    assert type(got["config"]["dims"]) is tuple and got["config"]["lr"] == 0.1 + 0.2
    assert got["loss_log"][0] == 2.5 and math.isnan(got["loss_log"][1]) and got["loss_log"][2:] == [math.inf, -math.inf]
    assert torch.equal(got["perm"], perm)
    assert got["looks_tagged"] == {"__tuple__": [1, 2]}


def test_model_dtypes_tied_weights_and_scalars_round_trip(tmp_path):
    emb = nn.Embedding(5, 4)
    head = nn.Linear(4, 5, bias=False)
    head.weight = emb.weight  # tied: two keys share one storage
    model = nn.ModuleDict({"emb": emb, "head": head}).to(torch.bfloat16)
    model.register_buffer("count", torch.tensor(3))  # 0-dim
    save_checkpoint(tmp_path, model_state=model.state_dict())
    state = read_checkpoint(tmp_path).model_state
    assert state.keys() == model.state_dict().keys()
    assert state["emb.weight"].dtype == torch.bfloat16 and state["count"].shape == ()
    fresh = nn.ModuleDict({"emb": nn.Embedding(5, 4), "head": nn.Linear(4, 5, bias=False)}).to(torch.bfloat16)
    fresh.head.weight = fresh.emb.weight
    fresh.register_buffer("count", torch.tensor(0))
    load_checkpoint(tmp_path, model=fresh)
    assert torch.equal(fresh.emb.weight, emb.weight) and fresh.head.weight is fresh.emb.weight
    assert int(fresh.count) == 3


# ----------------------------------------------------------------------------------------------------------
# Refusals: non-JSON-able state, mismatched model/optimizer, missing state
# ----------------------------------------------------------------------------------------------------------


class _Opaque:
    def __init__(self) -> None:
        self.fn = lambda epoch: 1.0

    def __call__(self, epoch: int) -> float:
        return self.fn(epoch)


def test_non_jsonable_scheduler_state_is_refused_before_writing(tmp_path):
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _Opaque())
    with pytest.raises(TypeError, match=r"scheduler\.state_dict\(\)\['lr_lambdas'\]\[0\]\['fn'\].*function"):
        save_checkpoint(tmp_path / "ckpt", model_state=model.state_dict(), optimizer=opt, scheduler=sched)
    assert not (tmp_path / "ckpt").exists()
    with pytest.raises(TypeError, match=r"extra\['n'\].*numpy"):
        save_checkpoint(tmp_path / "ckpt", model_state={}, extra={"n": np.int64(3)})
    with pytest.raises(TypeError, match="model_state"):
        save_checkpoint(tmp_path / "ckpt", model_state={"w": [1.0]})
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint(tmp_path / "ckpt", model_state={}, keep=0)
    assert not (tmp_path / "ckpt").exists()


def test_mismatched_model_lists_every_problem_and_leaves_model_untouched(tmp_path):
    src = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    save_checkpoint(tmp_path, model_state=src.state_dict())
    wrong = nn.Sequential(nn.Linear(4, 5), nn.Linear(3, 2), nn.Linear(2, 2))
    before = {k: v.clone() for k, v in wrong.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path, model=wrong)
    message = str(info.value)
    assert MODEL_FILE in message
    assert "missing keys" in message and "2.weight" in message and "2.bias" in message
    assert "shape mismatches" in message and "0.weight: model expects (5, 4), checkpoint has (3, 4)" in message
    assert all(torch.equal(before[k], v) for k, v in wrong.state_dict().items())

    extra_keys = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(in the file, not in the model\): 1\.bias, 1\.weight"):
        load_checkpoint(tmp_path, model=extra_keys)
    with pytest.raises(CheckpointError, match=r"dtype mismatches: 0\.bias: model expects torch\.float64"):
        apply_model_state(src.double(), read_checkpoint(tmp_path).model_state, source="x")


def test_mismatched_optimizer_scheduler_and_missing_state_are_refused(tmp_path):
    model = nn.Linear(3, 3)
    opt = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path / "a", model_state=model.state_dict(), optimizer=opt)
    with pytest.raises(CheckpointError, match=r"optimizer class mismatch: checkpoint has torch\.optim\.adamw\.AdamW"):
        load_checkpoint(tmp_path / "a", optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(CheckpointError, match=r"group sizes \[2\], received \[1\]"):
        load_checkpoint(tmp_path / "a", optimizer=torch.optim.AdamW([model.weight]))
    with pytest.raises(CheckpointError, match="no scheduler state"):
        load_checkpoint(tmp_path / "a", scheduler=torch.optim.lr_scheduler.StepLR(opt, 1))
    save_checkpoint(tmp_path / "b", model_state=model.state_dict(), rng=False)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(tmp_path / "b", optimizer=opt, restore_rng=False)
    with pytest.raises(CheckpointError, match="saved without RNG state; pass restore_rng=False"):
        load_checkpoint(tmp_path / "b")


def test_no_checkpoint_is_a_clear_not_found(tmp_path):
    assert not has_checkpoint(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="found neither"):  # also a FileNotFoundError
        load_checkpoint(tmp_path)


# ----------------------------------------------------------------------------------------------------------
# Integrity: truncated, tampered, pickles
# ----------------------------------------------------------------------------------------------------------


def _saved(tmp_path: Path) -> Path:
    model = nn.Linear(8, 8)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 8)).sum().backward()
    opt.step()
    return save_checkpoint(tmp_path, model_state=model.state_dict(), optimizer=opt, extra={"step": 1})


@pytest.mark.parametrize("name", [MODEL_FILE, STATE_FILE])
def test_truncated_file_is_named(tmp_path, name):
    snap = _saved(tmp_path)
    data = (snap / name).read_bytes()
    (snap / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match=rf"{name}: truncated: expected {len(data)} bytes, found {len(data) // 2}"
    ):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", [MODEL_FILE, STATE_FILE])
def test_tampered_file_is_named(tmp_path, name):
    snap = _saved(tmp_path)
    data = bytearray((snap / name).read_bytes())
    data[-3] ^= 0x01  # one bit in the tensor data
    (snap / name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{name}: SHA-256 mismatch"):
        load_checkpoint(tmp_path)


def test_tampered_or_missing_manifest_and_pointer(tmp_path):
    snap = _saved(tmp_path)
    manifest = json.loads((snap / MANIFEST).read_text())
    manifest["extra"]["step"] = 1000
    (snap / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=rf"{MANIFEST}: SHA-256 mismatch: {LATEST} expects"):
        load_checkpoint(tmp_path)
    (tmp_path / LATEST).write_text('{"snapshot": "../../etc", "manifest_sha256": "0"}')
    with pytest.raises(CheckpointError, match=r"expected a snapshot name like 'ckpt-000001', received '../../etc'"):
        load_checkpoint(tmp_path)
    (tmp_path / LATEST).write_text('{"snapsh')
    with pytest.raises(CheckpointError, match=rf"{LATEST}: corrupt pointer file"):
        load_checkpoint(tmp_path)
    (tmp_path / LATEST).write_text(json.dumps({"snapshot": "ckpt-000009", "manifest_sha256": "0"}))
    with pytest.raises(CheckpointError, match=r"points to ckpt-000009, but .* does not exist"):
        load_checkpoint(tmp_path)
    (snap / MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match=rf"{MODEL_FILE}: missing file"):
        load_checkpoint(snap)  # a snapshot directory can be loaded directly


class _Payload:
    """Unpickling this creates the marker file: proof that a loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make every unpickling entry point fail loudly, so a CheckpointError can only come from our own checks."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a loader tried to unpickle")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, forbidden)


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path, no_unpickling, kind):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.bin"
    if kind == "torch.save":
        torch.save({"weight": _Payload(marker)}, evil, pickle_module=pickle)  # a zip archive holding a pickle
    else:
        evil.write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    payload = evil.read_bytes()

    # 1. As a standalone model file.
    with pytest.raises(CheckpointError, match=r"evil\.bin: .*(zip archive|pickle stream).*refusing"):
        load_tensors(evil)

    # 2. Swapped into a checkpoint: the manifest's SHA-256 catches it ...
    snap = _saved(tmp_path / "ckpt")
    (snap / MODEL_FILE).write_bytes(payload)
    with pytest.raises(CheckpointError, match=rf"{MODEL_FILE}: (truncated|has extra bytes|SHA-256 mismatch)"):
        load_checkpoint(tmp_path / "ckpt")

    # 3. ... and with the manifest and LATEST forged to match, the header check still refuses it.
    manifest = json.loads((snap / MANIFEST).read_text())
    manifest["files"][MODEL_FILE] = {"sha256": ckpt_mod._sha256(payload), "bytes": len(payload)}
    manifest_bytes = json.dumps(manifest).encode()
    (snap / MANIFEST).write_bytes(manifest_bytes)
    (tmp_path / "ckpt" / LATEST).write_text(
        json.dumps({"snapshot": snap.name, "manifest_sha256": ckpt_mod._sha256(manifest_bytes)})
    )
    with pytest.raises(CheckpointError, match=rf"{MODEL_FILE}: .*(zip archive|pickle stream).*refusing"):
        load_checkpoint(tmp_path / "ckpt", model=nn.Linear(8, 8))
    assert not marker.exists(), "the pickle payload ran"


def test_source_never_unpickles():
    tree = ast.parse(Path(ckpt_mod.__file__).read_text())
    torch_loads = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "load"
                   and isinstance(n.value, ast.Name) and n.value.id == "torch"]  # fmt: skip
    imported = {alias.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
                for alias in n.names} | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}  # fmt: skip
    assert torch_loads == [], f"torch.load used on lines {torch_loads}"
    assert not imported & {"pickle", "dill", "joblib", "cloudpickle"}


# ----------------------------------------------------------------------------------------------------------
# Single safetensors files (the final model)
# ----------------------------------------------------------------------------------------------------------


def test_save_tensors_round_trip_and_integrity(tmp_path):
    tensors = {"w": torch.randn(3, 4), "b": torch.zeros(4, dtype=torch.bfloat16)}
    config = {"model": "seq2seq", "dims": [64, 128], "dropout": 0.1}
    path = tmp_path / "model.safetensors"
    save_tensors(path, tensors, config)
    got, meta = load_tensors(path)
    assert meta == config and got.keys() == tensors.keys()
    assert all(torch.equal(got[k], tensors[k]) for k in tensors)
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left behind

    data = bytearray(path.read_bytes())
    data[-1] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: SHA-256 mismatch of the tensor data"):
        load_tensors(path)
    path.write_bytes(bytes(data[:-5]))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated: tensor '\w' needs bytes"):
        load_tensors(path)
    path.write_bytes(b"\x01\x00")
    with pytest.raises(CheckpointError, match="truncated: expected at least 9 bytes, found 2"):
        load_tensors(path)
    with pytest.raises(TypeError, match="metadata: expected plain JSON"):
        save_tensors(path, tensors, {"bad": float("nan")})


def test_load_tensors_reads_foreign_safetensors_files(tmp_path):
    import safetensors.torch

    path = tmp_path / "foreign.safetensors"
    safetensors.torch.save_file({"x": torch.arange(6.0)}, path, metadata={"format": "pt"})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["x"], torch.arange(6.0)) and meta == {"format": "pt"}


# ----------------------------------------------------------------------------------------------------------
# Atomic saves: retention, interrupted saves, SIGKILL at random moments
# ----------------------------------------------------------------------------------------------------------


def test_keep_and_cleanup(tmp_path):
    for step in range(5):
        save_checkpoint(tmp_path, model_state={"w": torch.full((3,), float(step))}, extra={"step": step}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "ckpt-000004", "ckpt-000005"]
    assert load_checkpoint(tmp_path)["step"] == 4
    assert load_checkpoint(tmp_path / "ckpt-000004")["step"] == 3  # the kept older snapshot


@pytest.mark.parametrize("fail_at", ["write", "rename", "commit"])
def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch, fail_at):
    save_checkpoint(tmp_path, model_state={"w": torch.zeros(3)}, extra={"step": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    target = {"write": (ckpt_mod, "_write_durable"), "rename": (ckpt_mod.os, "rename"),
              "commit": (ckpt_mod, "atomic_write_bytes")}[fail_at]  # fmt: skip
    with monkeypatch.context() as patch:
        patch.setattr(*target, boom)
        with pytest.raises(OSError, match="simulated"):
            save_checkpoint(tmp_path, model_state={"w": torch.ones(3)}, extra={"step": 2})
    assert load_checkpoint(tmp_path)["step"] == 1
    assert torch.equal(read_checkpoint(tmp_path).model_state["w"], torch.zeros(3))
    # Leftovers (an uncommitted snapshot after "commit") go away with the next successful save.
    save_checkpoint(tmp_path, model_state={"w": torch.ones(3)}, extra={"step": 3})
    assert load_checkpoint(tmp_path)["step"] == 3
    assert len([p for p in tmp_path.iterdir() if p.name != LATEST]) == 1


def test_retention_counts_only_committed_snapshots(tmp_path, monkeypatch):
    for step in (1, 2):
        save_checkpoint(tmp_path, model_state={}, extra={"step": step}, keep=2)
    with monkeypatch.context() as patch:  # killed after the rename, before the commit: ckpt-000003 is an orphan
        patch.setattr(ckpt_mod, "atomic_write_bytes", lambda *a: (_ for _ in ()).throw(OSError("killed")))
        with pytest.raises(OSError, match="killed"):
            save_checkpoint(tmp_path, model_state={}, extra={"step": 3}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "ckpt-000001", "ckpt-000002", "ckpt-000003"]
    save_checkpoint(tmp_path, model_state={}, extra={"step": 4}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "ckpt-000002", "ckpt-000004"]
    assert load_checkpoint(tmp_path / "ckpt-000002")["step"] == 2


class _Lines:
    """Read a child's stdout lines on a thread, so waiting never blocks the pipe."""

    def __init__(self, stream) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.queue.put(line.strip())

    def until(self, prefix: str, timeout: float = 30.0) -> tuple[list[str], str]:
        """Lines before the first one starting with ``prefix``, and that line."""
        before, deadline = [], time.monotonic() + timeout
        while True:
            line = self.queue.get(timeout=max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return before, line
            before.append(line)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill test forks workers (POSIX only)")
def test_sigkill_at_random_moments_always_leaves_a_loadable_checkpoint(tmp_path):
    root = tmp_path / "ckpt"
    helper = Path(__file__).with_name("_save_loop.py")
    server = subprocess.Popen(
        [sys.executable, str(helper), str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    rng = random.Random(20240607)
    committed: int | None = None  # the step load_checkpoint returned after the previous kill
    saves_seen = 0
    live_pid: int | None = None  # a worker not yet reaped: killed in `finally` if an assertion fails mid-round
    try:
        lines = _Lines(server.stdout)
        lines.until("ready")
        for _ in range(24):
            server.stdin.write("fork\n")
            server.stdin.flush()
            _, started = lines.until("started")
            _, pid, start = started.split()
            live_pid = int(pid)
            assert int(start) == (0 if committed is None else committed + 1), "the worker resumed from the wrong step"
            time.sleep(rng.uniform(0.0, 0.2))
            os.kill(int(pid), signal.SIGKILL)
            before, dead = lines.until("dead")
            assert dead.split()[1] == pid
            live_pid = None
            saved = [int(line.split()[1]) for line in before if line.startswith("saved")]
            saves_seen += len(saved)
            reported = saved[-1] if saved else committed  # the last save known to have returned
            try:
                got = read_checkpoint(root)
            except CheckpointNotFoundError:
                assert reported is None, "a save returned but nothing is committed"
                continue
            step = got.extra["step"]
            # The committed step is the last reported save or the one in flight when the kill came.
            allowed = {0} if reported is None else {reported, reported + 1}
            assert step in allowed, f"committed step {step}, last reported save {reported}"
            # Every file belongs to that step.
            assert torch.equal(got.model_state["w"], torch.full_like(got.model_state["w"], float(step)))
            assert torch.equal(got.model_state["b"], torch.full_like(got.model_state["b"], float(step)))
            assert torch.equal(got.extra["check"], torch.full_like(got.extra["check"], step))
            assert got.extra["log"] == [float(step)] * 8 and got.rng_state is not None
            committed = step
    finally:
        if live_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(live_pid, signal.SIGKILL)
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert saves_seen >= 5, f"only {saves_seen} saves completed: the kills did not land among saves"
    # Leftovers of killed saves are cleaned by the next save.
    save_checkpoint(root, model_state={"w": torch.zeros(1)}, extra={"step": -1})
    assert len(list(root.iterdir())) == 2 and load_checkpoint(root, restore_rng=True)["step"] == -1


def test_load_metadata_reads_the_header_alone_and_refuses_what_is_no_safetensors(tmp_path):
    meta = {"format": "attnlab-model", "task": {"name": "g2p"}, "step": 7}
    save_tensors(tmp_path / "m.safetensors", {"w": torch.arange(6.0)}, meta)
    assert load_metadata(tmp_path / "m.safetensors") == load_tensors(tmp_path / "m.safetensors")[1] == meta
    with pytest.raises(CheckpointError, match="missing file"):
        load_metadata(tmp_path / "nothing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_metadata(tmp_path / "junk.safetensors")
