"""Test helper for the kill test in test_checkpoint.py: a fork server whose children save checkpoints forever.

Usage: ``python _save_loop.py ROOT``. Prints ``ready``, then for each ``fork`` line on stdin forks a worker and
prints ``dead PID STATUS`` once the worker has died (the test kills it with SIGKILL). Importing torch once and
forking keeps each of the many kill rounds cheap; the server never runs a parallel torch op, so forking is safe.

A worker resumes from the committed checkpoint (step + 1, or 0 when there is none), prints ``started PID STEP``,
then saves step after step as fast as it can, printing ``saved STEP`` after each save returns. Every tensor of
step s is filled with s, so the test can tell that the files it loads all belong to the step the manifest names.
Lines are written with one ``os.write`` each (atomic on a pipe), so a kill never tears a line.
"""

from __future__ import annotations

import os
import sys

import torch

from attnlab.train.checkpoint import CheckpointNotFoundError, load_checkpoint, save_checkpoint

SIZE = 1 << 16  # 256 KiB per float32 tensor: big enough that kills land inside writes, small enough to be fast


def _say(text: str) -> None:
    os.write(sys.stdout.fileno(), f"{text}\n".encode())


def state_for(step: int) -> tuple[dict[str, torch.Tensor], dict]:
    model_state = {"w": torch.full((SIZE,), float(step)), "b": torch.full((7,), float(step), dtype=torch.float64)}
    extra = {"step": step, "check": torch.full((SIZE // 4,), step, dtype=torch.int64), "log": [float(step)] * 8}
    return model_state, extra


def worker(root: str) -> None:
    try:
        step = load_checkpoint(root, restore_rng=False)["step"] + 1
    except CheckpointNotFoundError:
        step = 0
    _say(f"started {os.getpid()} {step}")
    while True:
        model_state, extra = state_for(step)
        save_checkpoint(root, model_state=model_state, extra=extra, rng=True)
        _say(f"saved {step}")
        step += 1


def main() -> None:
    root = sys.argv[1]
    _say("ready")
    for line in sys.stdin:
        if line.strip() != "fork":
            break
        pid = os.fork()
        if pid == 0:
            try:
                worker(root)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        _say(f"dead {pid} {status}")


if __name__ == "__main__":
    main()
