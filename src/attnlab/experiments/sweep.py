"""Train experiments over several seeds, resumably, and summarize them: accuracy, parameters, time per epoch.

    python -m attnlab.experiments.sweep --budget full --seeds 0 1 2 --out DIR NAME...

Each ``(experiment, seed)`` trains into ``DIR/NAME/seed-S/`` through :func:`~attnlab.experiments.train_experiment`.
A run is finished when its ``result.json`` exists (written after the test evaluation); a rerun skips it. A run that
was killed mid-way continues from its checkpoint (``resume=True``), one killed before its first checkpoint starts
over. After every run ``DIR/sweep.json`` is rewritten with every finished run in ``DIR``, so two sweeps over
different names may share ``DIR``.

``--max-steps N`` trains every run for ``N`` steps instead of the budget's (the cosine schedule stretches with it).

A row: ``experiment``, ``seed``, ``budget``, ``max_steps`` (None: the budget's), ``test_accuracy`` (percent, of
``best.safetensors``, the weights with the best dev accuracy, on the task's test split), ``dev_accuracy`` (that
best), ``parameters``, ``steps``, ``epochs`` (images trained on / training-set size), ``train_seconds`` (optimizer
steps only, no evaluation) and ``seconds_per_epoch``. Times are wall-clock on whatever else the machine was doing:
compare them within a sweep.

:func:`summarize` gives per experiment the mean, the sample standard deviation (``ddof=1``; 0 for one seed) and the
min and max of the test accuracy over seeds, and the mean seconds per epoch. Only canvas tasks
(:class:`~attnlab.experiments.vision.CanvasTask`) can be scored on their test split here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from attnlab.train.checkpoint import atomic_write_bytes
from attnlab.train.rundir import checkpoint_dir, has_checkpoint
from attnlab.train.trainer import BEST_FILE, MODEL_FILE, SUMMARY_FILE

from .base import BUDGETS, get_experiment
from .models import load_model
from .run import RUN_FILE, train_experiment
from .vision import CanvasTask

__all__ = ["RESULT_FILE", "SWEEP_FILE", "collect", "format_table", "main", "run_one", "run_sweep", "summarize"]

RESULT_FILE = "result.json"
SWEEP_FILE = "sweep.json"


def _score(run: Path, name: str, seed: int, budget: str, max_steps: int | None) -> dict[str, Any]:
    """The row of a trained run: test accuracy of its best weights, size and timings."""
    summary = json.loads((run / SUMMARY_FILE).read_text())
    weights = run / BEST_FILE if (run / BEST_FILE).is_file() else run / MODEL_FILE
    loaded = load_model(weights)
    task = CanvasTask.from_spec(loaded.task)
    test = task.evaluate(loaded.model, "test")
    images = int(summary["tokens"])  # the trainer counts a classification example as one "token"
    epochs = images / task.sizes["train"]
    seconds = float(summary["train_seconds"])
    return {
        "experiment": name,
        "seed": seed,
        "budget": budget,
        "max_steps": max_steps,
        "test_accuracy": test["accuracy"],
        "dev_accuracy": summary["best"],
        "parameters": loaded.metadata["parameters"],
        "steps": summary["step"],
        "epochs": round(epochs, 4),
        "train_seconds": round(seconds, 3),
        "seconds_per_epoch": round(seconds / epochs, 3) if epochs > 0 else None,
        "weights": weights.name,
        "run_dir": str(run),
    }


def run_one(
    name: str,
    seed: int,
    budget: str,
    run: Path,
    *,
    max_steps: int | None = None,
    progress: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Train (or finish, or skip) one run and return its row; ``run/result.json`` marks it finished.
    ``max_steps`` overrides the budget's (None: the budget's own)."""
    result = run / RESULT_FILE
    wanted = (name, seed, budget, max_steps)
    if result.is_file():
        row = json.loads(result.read_text())
        found = (row.get("experiment"), row.get("seed"), row.get("budget"), row.get("max_steps"))
        if found != wanted:
            raise ValueError(
                f"{run}: holds (experiment, seed, budget, max_steps) = {found}, expected {wanted}; use another --out"
            )
        return row
    if not (run / SUMMARY_FILE).is_file():
        resume = has_checkpoint(checkpoint_dir(run)) and (run / RUN_FILE).is_file()
        if resume:  # a killed run: continue it, after checking it is the run we want
            saved = json.loads((run / RUN_FILE).read_text())
            steps = get_experiment(name).budget(budget).train.max_steps if max_steps is None else max_steps
            if (saved.get("experiment"), saved.get("seed"), saved.get("budget"), saved.get("max_steps")) != (
                name,
                seed,
                budget,
                steps,
            ):
                raise ValueError(f"{run}: a run of {saved} is in the way of {wanted}")
        train_experiment(name, run, budget=None if resume else budget, seed=None if resume else seed,
                         max_steps=None if resume else max_steps, resume=resume, force=not resume and run.exists(),
                         progress=progress, verbose=verbose)  # fmt: skip
    row = _score(run, name, seed, budget, max_steps)
    atomic_write_bytes(result, (json.dumps(row, indent=2) + "\n").encode())
    return row


def run_sweep(
    names: Sequence[str],
    seeds: Iterable[int],
    budget: str,
    out_dir: str | Path,
    *,
    max_steps: int | None = None,
    progress: bool = False,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Train every ``(name, seed)`` into ``out_dir/name/seed-S`` (skipping finished runs) and return their rows.
    After each run ``out_dir/sweep.json`` is rewritten with every finished run in ``out_dir`` (:func:`collect`), so
    several sweeps may fill one directory in parallel (with different names). Unknown names or budget fail before
    anything trains."""
    if budget not in BUDGETS:
        raise KeyError(f"budget: expected one of {list(BUDGETS)}, received {budget!r}")
    seeds = list(seeds)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise ValueError(f"seeds: expected one or more ints >= 0, received {seeds!r}")
    for name in names:
        get_experiment(name)  # KeyError listing the names
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name in names:
        for seed in seeds:
            run = out / name / f"seed-{seed}"
            rows.append(run_one(name, seed, budget, run, max_steps=max_steps, progress=progress, verbose=verbose))
            everything = collect(out)  # other sweeps may be filling the same directory in parallel
            atomic_write_bytes(out / SWEEP_FILE, (json.dumps(everything, indent=2) + "\n").encode())
            if verbose:
                row = rows[-1]
                print(f"{name} seed {seed}: test {row['test_accuracy']:.1f}%  {row['seconds_per_epoch']} s/epoch",
                      file=sys.stderr, flush=True)  # fmt: skip
    return rows


def collect(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run's row under ``out_dir`` (``*/seed-*/result.json``), sorted by experiment and seed."""
    rows = [json.loads(path.read_text()) for path in Path(out_dir).glob(f"*/seed-*/{RESULT_FILE}")]
    return sorted(rows, key=lambda row: (row["experiment"], row["seed"]))


def _stats(values: Sequence[float]) -> dict[str, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "min": min(values), "max": max(values)}


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per experiment (first-seen order): ``seeds``, ``test_accuracy`` and ``seconds_per_epoch`` as
    ``{"mean", "std" (sample, ddof=1; 0 for one seed), "min", "max"}``, ``parameters``, ``spread``
    (``max - min`` of the test accuracy)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["experiment"], []).append(row)
    table = []
    for name, group in groups.items():
        accuracy = _stats([float(r["test_accuracy"]) for r in group])
        timing = [float(r["seconds_per_epoch"]) for r in group if r.get("seconds_per_epoch") is not None]
        table.append({
            "experiment": name,
            "seeds": sorted(r["seed"] for r in group),
            "parameters": group[0]["parameters"],
            "test_accuracy": accuracy,
            "spread": accuracy["max"] - accuracy["min"],
            "seconds_per_epoch": _stats(timing) if timing else None,
        })  # fmt: skip
    return table


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`summarize`'s output."""
    lines = [
        "| experiment | params | seeds | test acc. mean ± std | min-max | s/epoch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for entry in summary:
        acc, timing = entry["test_accuracy"], entry["seconds_per_epoch"]
        seconds = f"{timing['mean']:.1f}" if timing else "-"
        spread = f"{acc['min']:.1f}-{acc['max']:.1f}"
        lines.append(f"| {entry['experiment']} | {entry['parameters']:,} | {len(entry['seeds'])} | "
                     f"{acc['mean']:.1f} ± {acc['std']:.1f} | {spread} | {seconds} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnlab.experiments.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="+", metavar="NAME", help="registered experiments")
    parser.add_argument("--budget", default="full", choices=BUDGETS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=None, help="override the budget's number of steps")
    parser.add_argument("--out", required=True, type=Path, help="sweep directory (runs, sweep.json, summary.json)")
    parser.add_argument("--progress", action="store_true", help="tqdm bar per run")
    parser.add_argument("--quiet", action="store_true", help="no line per evaluation and per finished run")
    args = parser.parse_args(argv)
    rows = run_sweep(
        args.names,
        args.seeds,
        args.budget,
        args.out,
        max_steps=args.max_steps,
        progress=args.progress,
        verbose=not args.quiet,
    )
    summary = summarize(rows)
    atomic_write_bytes(args.out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    print(format_table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
