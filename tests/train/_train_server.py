"""Test helper for test_trainer_faults.py: a fork server that runs ``attnlab`` CLI commands in children, some of
which SIGKILL themselves at a chosen point.

Usage: ``python _train_server.py``. Imports torch and attnlab and parses CMUdict once, prints ``ready``, then for
each JSON line on stdin ``{"argv": [...], "kill": {...} | null}`` forks a child that runs ``attnlab.cli.main(argv)``
and prints ``started PID``, then ``dead PID STATUS`` once the child has ended (STATUS as from ``os.waitpid``).

Kill points (``kill``), each a real ``SIGKILL`` the child sends itself, so nothing gets to clean up:

* ``{"after_step": K}``: right after the ``train.jsonl`` line of step K is durably written.
* ``{"torn_step": K}``: halfway through writing the ``train.jsonl`` line of step K (a torn last line).
* ``{"write": NAME, "nth": N}``: halfway through the N-th durable file write whose file name contains NAME
  (``state.safetensors`` of a checkpoint, ``best.safetensors``, ``LATEST``...), after flushing the half written.

Forking a process that imported torch is safe here because the server never runs a parallel torch op.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import torch

torch.set_num_threads(1)

import attnlab.cli  # noqa: E402
import attnlab.train.checkpoint as checkpoint  # noqa: E402
import attnlab.train.trainer as trainer  # noqa: E402
from attnlab.experiments import G2PTask  # noqa: E402


def _say(text: str) -> None:
    os.write(sys.stdout.fileno(), f"{text}\n".encode())


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(kill: dict) -> None:
    if "after_step" in kill or "torn_step" in kill:
        original = trainer.append_jsonl
        step = kill.get("after_step", kill.get("torn_step"))

        def append(path, record):
            if path.name == trainer.TRAIN_LOG and record.get("step") == step:
                if "torn_step" in kill:
                    line = json.dumps(dict(record), separators=(",", ":")).encode()
                    with open(path, "ab") as f:
                        f.write(line[: len(line) // 2])
                        f.flush()
                        os.fsync(f.fileno())
                    _die()
                original(path, record)
                _die()
            original(path, record)

        trainer.append_jsonl = append
    if "write" in kill:
        original_write = checkpoint._write_durable
        seen = [0]

        def write(path, data):
            if kill["write"] in path.name:
                seen[0] += 1
                if seen[0] == kill["nth"]:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                    os.write(fd, data[: len(data) // 2])
                    os.fsync(fd)
                    _die()
            original_write(path, data)

        checkpoint._write_durable = write


def main() -> None:
    for split in ("train", "dev"):  # parse CMUdict and find the splits once; children inherit them
        G2PTask().entries(split)
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # the first optimizer imports torch._dynamo (~2 s)
    _say("ready")
    for line in sys.stdin:
        command = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the CLI's output must not mix with the protocol
            try:
                if command.get("kill"):
                    _install(command["kill"])
                code = attnlab.cli.main(command["argv"])
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _say(f"started {pid}")
        _, status = os.waitpid(pid, 0)
        _say(f"dead {pid} {status}")


if __name__ == "__main__":
    main()
