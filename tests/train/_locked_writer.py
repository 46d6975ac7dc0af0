"""Test helper for the two-process test in test_run_lock.py: the first writer of a run directory.

Usage: ``python _locked_writer.py RUN``. Prepares RUN as a new run directory, takes its lock, prints ``locked``,
then commits a checkpoint into ``RUN/checkpoint`` after another (step s: every tensor filled with s; every snapshot
kept, so the test can load each one afterwards) and prints ``saved STEP`` after each save returns, until a line
arrives on stdin (or MAX_SAVES saves are done: a bound on the disk and time a lost test can take). Then it
releases the lock and prints ``released``. Lines are written with one ``os.write`` each (atomic on a pipe).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import torch

from attnlab.train.checkpoint import save_checkpoint
from attnlab.train.rundir import checkpoint_dir, lock_run_dir, prepare_run_dir

MAX_SAVES = 2000
PAUSE_S = 0.005  # between saves: a steady writer, not one that fills the disk


def _say(text: str) -> None:
    os.write(sys.stdout.fileno(), f"{text}\n".encode())


def state_for(step: int) -> tuple[dict[str, torch.Tensor], dict]:
    model_state = {"w": torch.full((1024,), float(step)), "b": torch.full((7,), float(step), dtype=torch.float64)}
    return model_state, {"step": step, "check": torch.full((256,), step, dtype=torch.int64)}


def main() -> None:
    run = prepare_run_dir(sys.argv[1])
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    with lock_run_dir(run):
        _say("locked")
        for step in range(MAX_SAVES):
            if stop.is_set():
                break
            model_state, extra = state_for(step)
            save_checkpoint(checkpoint_dir(run), model_state=model_state, extra=extra, keep=MAX_SAVES)
            _say(f"saved {step}")
            time.sleep(PAUSE_S)
    _say("released")


if __name__ == "__main__":
    main()
