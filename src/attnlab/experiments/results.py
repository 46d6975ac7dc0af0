"""Tabulate trained sequence models for RESULTS.md: test scores, size, training time and speed, scores by length.

    python -m attnlab.experiments.results SOURCE... [--split test] [--beam K] [--limit N] [--out FILE.json]
    python -m attnlab.experiments.results --curves RUN...

Each SOURCE is a run directory or a weight file. A run directory is scored with its ``best.safetensors`` (the weights
with the best dev score, what early stopping keeps) or, without one, its ``model.safetensors``. Every model is
decoded greedily and, with ``--beam K`` (K > 1), also with a beam of K. Prints a markdown table (one row per model)
and a by-length table, and with ``--out`` writes every number as JSON.

Training time and speed are the run's own log at the step of the scored weights (``eval.jsonl``: optimizer seconds,
no evaluation; tokens per second over the run so far): wall-clock on whatever else the machine was doing then.

``--curves`` prints each run's learning curve instead (no decoding): at every dev evaluation the step, the epoch,
the target tokens trained on so far (from ``train.jsonl``) and the dev score. Tokens, unlike seconds, compare runs
that shared the machine unevenly; divide by a speed measured side by side to get a time.

By length: G2P words are grouped by letters (2-4, 5-6, 7-8, 9-10, 11-12, 13+) and scored by WER without stress;
reversal by sequence length in tens (1-10, ..., 91-100), scored by exact-match accuracy. Pooled from the per-length
scores, weighted by the number of items.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnlab.train.checkpoint import load_metadata
from attnlab.train.trainer import BEST_FILE, MODEL_FILE

from .run import evaluate_model, log_by_step, training_at_step

__all__ = ["BINS", "bin_scores", "curve_table", "learning_curve", "main", "score_source", "tables"]

# (low, high) inclusive; None: no upper end
BINS: dict[str, list[tuple[int, int | None]]] = {
    "g2p": [(1, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, None)],
    "reverse": [(lo, lo + 9) for lo in range(1, 100, 10)],
}
_SCORES = ("wer", "per", "wer_no_stress", "per_no_stress", "words", "accuracy", "token_accuracy", "sequences")
_BIN_METRIC = {"g2p": ("wer_no_stress", "words"), "reverse": ("accuracy", "n")}


def _label(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else f"{low}-{high}"


def bin_scores(task: str, by_length: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per-length scores pooled into :data:`BINS` (item-weighted means); bins with no items are left out."""
    metric, count = _BIN_METRIC[task]
    pooled: dict[str, dict[str, float]] = {}
    for low, high in BINS[task]:
        rows = [row for n, row in by_length.items() if int(n) >= low and (high is None or int(n) <= high)]
        items = sum(int(row[count]) for row in rows)
        if items:
            pooled[_label(low, high)] = {metric: sum(row[metric] * row[count] for row in rows) / items, "n": items}
    return pooled


def _weights(source: Path) -> Path:
    if source.is_dir():
        for name in (BEST_FILE, MODEL_FILE):
            if (source / name).is_file():
                return source / name
        raise FileNotFoundError(f"{source}: no {BEST_FILE} or {MODEL_FILE} (has the run evaluated yet?)")
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file or directory")
    return source


def score_source(source: str | Path, *, split: str = "test", beam: int = 1, limit: int | None = None) -> dict[str, Any]:
    """One model's row: greedy (and beam) scores with by-length bins, parameters, step and training log."""
    weights = _weights(Path(source))
    greedy = evaluate_model(_task_of(weights), weights, split=split, limit=limit, by_length=True)
    task = greedy["task"]
    row: dict[str, Any] = {
        "source": str(source),
        "weights": str(weights),
        "experiment": greedy["experiment"],
        "task": task,
        "split": split,
        "step": greedy["step"],
        "parameters": greedy["parameters"],
        **training_at_step(weights, greedy["step"]),
        "greedy": {k: v for k, v in greedy.items() if k in _SCORES},
        "by_length": bin_scores(task, greedy["by_length"]),
        "by_length_raw": greedy["by_length"],
    }
    if beam > 1:
        scored = evaluate_model(task, weights, split=split, limit=limit, beam=beam)
        row[f"beam{beam}"] = {k: v for k, v in scored.items() if k in row["greedy"]}
    return row


def _task_of(weights: Path) -> str | None:
    """The task a weight file was trained for, from its header (evaluate_model then loads and checks it)."""
    task = load_metadata(weights).get("task")
    return task.get("name") if isinstance(task, dict) else None


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def tables(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: a score table and a by-length table for ``rows`` (all of one task)."""
    tasks = {row["task"] for row in rows}
    if len(tasks) != 1:
        raise ValueError(f"rows: expected models of one task, received tasks {sorted(tasks)}")
    task = tasks.pop()
    beams = sorted({key for row in rows for key in row if key.startswith("beam")})
    if task == "g2p":
        metrics = {"wer": "WER", "per": "PER", "wer_no_stress": "WER no stress", "per_no_stress": "PER no stress"}
    else:
        metrics = {"accuracy": "exact %", "token_accuracy": "token %"}
    beamed = [key for key in metrics if key in ("wer", "wer_no_stress", "accuracy")]  # the beam columns
    head = ["model", "step", "parameters", "train s", "tok/s", *(f"{label} (greedy)" for label in metrics.values())]
    head += [f"{metrics[key]} ({beam})" for beam in beams for key in beamed]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["experiment"], _fmt(row["step"]), _fmt(row["parameters"]), _fmt(row.get("train_seconds"), 0),
                 _fmt(row.get("tokens_per_s"), 0), *(_fmt(row["greedy"][key]) for key in metrics)]  # fmt: skip
        cells += [_fmt(row.get(beam, {}).get(key)) for beam in beams for key in beamed]
        lines.append("| " + " | ".join(cells) + " |")
    labels = [_label(lo, hi) for lo, hi in BINS[task]]
    labels = [label for label in labels if any(label in row["by_length"] for row in rows)]
    metric = _BIN_METRIC[task][0]
    lines += ["", f"{metric} by input length (greedy):", "", "| model | " + " | ".join(labels) + " |",
              "|" + "---|" * (len(labels) + 1)]  # fmt: skip
    for row in rows:
        cells = [_fmt(row["by_length"].get(label, {}).get(metric), 1) for label in labels]
        lines.append(f"| {row['experiment']} | " + " | ".join(cells) + " |")
    counts = [_fmt(rows[0]["by_length"].get(label, {}).get("n")) for label in labels]
    lines.append("| items | " + " | ".join(counts) + " |")
    return "\n".join(lines)


def learning_curve(run: str | Path) -> list[dict[str, Any]]:
    """``[{"step", "epoch", "tokens", METRIC: value}, ...]`` at each dev evaluation of a run directory."""
    run = Path(run)
    for name in ("train.jsonl", "eval.jsonl"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run}: no {name} (not a run directory, or it has not trained yet)")
    train, evals = log_by_step(run / "train.jsonl"), log_by_step(run / "eval.jsonl")
    tokens, cumulative = 0, {}
    for step in sorted(train):
        if "tokens" not in train[step]:
            raise ValueError(f"{run / 'train.jsonl'}: step {step} has no 'tokens'")
        tokens += int(train[step]["tokens"])
        cumulative[step] = (tokens, train[step].get("epoch"))
    curve = []
    for step, row in sorted(evals.items()):
        if step not in cumulative:  # evaluated, but its training line was lost: say so rather than skip it
            raise ValueError(f"{run}: eval.jsonl has step {step}, train.jsonl does not (a damaged run directory?)")
        scores = {k: v for k, v in row.items() if k in _SCORES and k not in ("words", "sequences")}
        curve.append({"step": step, "epoch": cumulative[step][1], "tokens": cumulative[step][0], **scores})
    return curve


def curve_table(runs: Sequence[str | Path]) -> str:
    """Markdown: every run's learning curve, one row per dev evaluation."""
    lines = ["| run | step | epoch (from 0) | target tokens | dev scores |", "|---|---|---|---|---|"]
    for run in runs:
        for row in learning_curve(run):
            scores = ", ".join(
                f"{k} {_fmt(v) or 'n/a'}" for k, v in row.items() if k not in ("step", "epoch", "tokens")
            )
            lines.append(f"| {Path(run).name} | {row['step']:,} | {row['epoch']} | {row['tokens'] / 1e6:.2f}M | "
                         f"{scores} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnlab.experiments.results", description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="run directories or weight files (one task)")
    parser.add_argument("--split", choices=("test", "dev"), default="test", help="default test")
    parser.add_argument("--beam", type=int, default=1, metavar="K", help="also decode with a beam of K")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="score N items, evenly spaced")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE", help="write the rows as JSON")
    parser.add_argument("--curves", action="store_true", help="print the runs' learning curves instead")
    args = parser.parse_args(argv)
    if args.curves:
        try:
            print(curve_table(args.sources))
        except (ValueError, OSError, KeyError) as error:
            print(f"results: error: {error}", file=sys.stderr)
            return 1
        return 0
    try:
        rows = [score_source(s, split=args.split, beam=args.beam, limit=args.limit) for s in args.sources]
        print(tables(rows))
    except (ValueError, OSError) as error:
        print(f"results: error: {error}", file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
