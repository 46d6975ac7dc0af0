"""Where a G2P model's word errors lie: wrong length, only at the word's end, only at its start (issue 15).

    python -m attnlab.experiments.g2p_errors [--model FILE] [--split dev] [--limit N] [--beam K] [--out FILE.json]

A model that cannot see where its input word ends (a Transformer encoder over letters alone has no end marker and
no recurrence) should get word-final rules wrong (silent e, -ed, -es) more often than a bidirectional LSTM, which
reads the end for free: more of its errors should have the wrong length or lie in the last phonemes. This module
measures that, without training, on any weight file; for an :class:`~attnlab.seq.Ensemble` it scores each member
as its own model (decoded alone, with the file's task), then the ensemble.

A word is an error when its output matches none of its references (WER's rule, :mod:`attnlab.train.metrics`); it
is compared with the reference closest to it in Levenshtein distance (the first one on a tie, as PER does). With
``h`` the output, ``r`` that reference and ``n = max(|h|, |r|)``, an error has

* the wrong length when ``|h| != |r|`` (too short or too long);
* a difference only in the last ``edge`` phonemes when the common prefix is long enough,
  ``prefix(h, r) >= n - edge``: the two agree up to the last ``edge`` symbols of the longer one (``K AE T S``
  for ``K AE T``, or ``K AE D`` for ``K AE T``);
* a difference only in the first ``edge`` phonemes when ``suffix(h, r) >= n - edge``, the mirror image: the
  control, since nothing in the models favours word-initial errors.

The three overlap (``K AE T S`` has the wrong length and differs only at the end), and a pair of at most ``edge``
phonemes counts as both end and start. Prefix, suffix and edit distances come from ``rapidfuzz.distance``.
Stress digits are stripped from both sides first unless ``stress=True`` (WER without stress, the metric the
project reports).

For an ensemble the rows also profile each member's *own* errors: those on the words every other member gets right
(what one member adds to the other's errors; the split of a WER gap between two models).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from rapidfuzz.distance import Postfix, Prefix
from torch import nn

from attnlab.data.g2p import strip_stress
from attnlab.data.vocab import check_int
from attnlab.seq import Ensemble
from attnlab.train.metrics import closest_references

from .models import load_model
from .run import SPLITS, resolve_model_path
from .tasks import G2PTask, task_from_spec

__all__ = ["COUNTS", "error_profile", "main", "model_profiles", "own_errors", "table"]

# the counts error_profile returns, each also as a share of the errors ("<name>_share", percent)
COUNTS = ("wrong_length", "too_short", "too_long", "last_only", "first_only")


def error_profile(
    hyps: Sequence[Sequence[Hashable]],
    refs: Sequence[Sequence[Sequence[Hashable]]],
    *,
    stress: bool = False,
    edge: int = 2,
) -> dict[str, Any]:
    """Where the word errors of ``hyps`` (one output per word) against ``refs`` (each word's references) lie.

    Returns ``words``, ``errors``, ``wer`` (percent of words), for each name in :data:`COUNTS` the number of errors
    of that kind and ``<name>_share``, its percent of the errors (None when there are no errors), and ``edge``.
    ``last_only`` / ``first_only``: the output differs from the closest reference only in the last / first ``edge``
    phonemes (see the module docstring).

    Raises:
        ValueError: ``hyps`` and ``refs`` of different lengths or empty, a word without references, ``edge < 1``.
        TypeError: ``edge`` or ``stress`` of the wrong type.
    """
    edge = check_int("edge", edge, 1)
    if not isinstance(stress, bool):
        raise TypeError(f"stress: expected a bool, received {type(stress).__name__} {stress!r}")
    counts = dict.fromkeys(COUNTS, 0)
    errors = 0
    for h, r in closest_references(hyps, refs, stress=stress):
        if h == r:
            continue
        errors += 1
        longest = max(len(h), len(r))
        counts["wrong_length"] += len(h) != len(r)
        counts["too_short"] += len(h) < len(r)
        counts["too_long"] += len(h) > len(r)
        counts["last_only"] += Prefix.similarity(h, r) >= longest - edge
        counts["first_only"] += Postfix.similarity(h, r) >= longest - edge
    shares = {f"{name}_share": 100.0 * n / errors if errors else None for name, n in counts.items()}
    return {"words": len(hyps), "errors": errors, "wer": 100.0 * errors / len(hyps), **counts, **shares, "edge": edge}


def _members(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(label, model)]``: each member of an ensemble on its own, then the ensemble; else the model alone."""
    if isinstance(model, Ensemble):
        labels = [f"members.{i} ({type(m).__name__})" for i, m in enumerate(model.members)]
        return [
            *zip(labels, model.members, strict=True),
            (f"ensemble (weights {', '.join(f'{w:.2f}' for w in model.weights)})", model),
        ]
    return [(type(model).__name__, model)]


def model_profiles(
    model: str | Path | None = None,
    *,
    split: str = "dev",
    limit: int | None = None,
    beam: int = 1,
    edge: int = 2,
    members: bool = True,
) -> list[dict[str, Any]]:
    """:func:`error_profile` (WER without stress) of a G2P weight file on ``split`` (``limit`` words evenly spaced;
    None: the shipped model): one row per member of an ensemble and one for the ensemble (``members=False``: the
    file's model alone). Each row adds ``label``, ``split``, ``decode`` and ``seconds``.

    Raises:
        ValueError: an unknown split, a file that is not a G2P model.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, received {split!r}")
    path = resolve_model_path(model)
    loaded = load_model(path)
    task = task_from_spec(loaded.task)
    if not isinstance(task, G2PTask):
        raise ValueError(f"{path}: expected a G2P model, received one trained for task {task.name!r}")
    entries = task.entries(split, limit)
    words, refs = [word for word, _ in entries], [prons for _, prons in entries]
    parts = _members(loaded.model) if members else [(type(loaded.model).__name__, loaded.model)]
    rows, outputs = [], []
    how = "greedy" if beam == 1 else f"beam-{beam}"
    for label, part in parts:
        started = time.perf_counter()
        hyps = task.decode(part, words, beam=beam)
        outputs.append(hyps)
        row = {"label": label, "split": split, "decode": how}
        rows.append(row | error_profile(hyps, refs, edge=edge) | {"seconds": round(time.perf_counter() - started, 1)})
    if len(parts) > 2:  # an ensemble's members, then the ensemble: each member's errors where the others are right
        for (label, _), profile in zip(parts, own_errors(outputs[:-1], refs, edge=edge), strict=False):
            if profile is not None:
                rows.append({"label": f"{label}, on words the other members get right", "split": split,
                             "decode": how} | profile)  # fmt: skip
    return rows


def own_errors(
    outputs: Sequence[Sequence[Sequence[str]]], refs: Sequence[Sequence[Sequence[str]]], *, edge: int = 2
) -> list[dict[str, Any] | None]:
    """For each model's ``outputs`` (one list of outputs per model, the same words in the same order), the
    :func:`error_profile` of its output on the words every *other* model gets right (without stress), or None when
    there are none: the errors that model alone makes. Its ``words`` are those words, its ``errors`` its own errors.
    """
    if len(outputs) < 2:
        raise ValueError(f"outputs: expected the outputs of at least two models, received {len(outputs)}")
    right = [[_is_right(h, r) for h, r in zip(hyps, refs, strict=True)] for hyps in outputs]  # (models, words)
    profiles: list[dict[str, Any] | None] = []
    for i, hyps in enumerate(outputs):
        keep = [w for w in range(len(refs)) if all(right[j][w] for j in range(len(outputs)) if j != i)]
        profiles.append(error_profile([hyps[w] for w in keep], [refs[w] for w in keep], edge=edge) if keep else None)
    return profiles


def _is_right(hyp: Sequence[str], refs: Sequence[Sequence[str]]) -> bool:
    """Whether ``hyp`` matches one of ``refs`` without stress (WER's rule)."""
    return strip_stress(hyp) in {strip_stress(ref) for ref in refs}


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of :func:`model_profiles` rows (shares of the errors, percent)."""
    edge = rows[0]["edge"] if rows else 2
    head = ["model", "split", "words", "WER no stress", "errors", "wrong length (short / long)",
            f"only last {edge}", f"only first {edge}"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def share(row: dict[str, Any], name: str) -> str:
        value = row[f"{name}_share"]
        return "n/a" if value is None else f"{value:.1f}%"

    for row in rows:
        cells = [row["label"], row["split"], f"{row['words']:,}", f"{row['wer']:.2f}", f"{row['errors']:,}",
                 f"{share(row, 'wrong_length')} ({share(row, 'too_short')} / {share(row, 'too_long')})",
                 share(row, "last_only"), share(row, "first_only")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m attnlab.experiments.g2p_errors", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", help="weight file or run directory (default: the shipped model)")
    parser.add_argument("--split", choices=SPLITS, default="dev")
    parser.add_argument("--limit", type=int, help="that many words, evenly spaced (default: all)")
    parser.add_argument("--beam", type=int, default=1, help="beam size (default 1: greedy)")
    parser.add_argument("--edge", type=int, default=2, help="phonemes at each end (default 2)")
    parser.add_argument("--no-members", action="store_true", help="score an ensemble only as a whole")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    rows = model_profiles(args.model, split=args.split, limit=args.limit, beam=args.beam, edge=args.edge,
                          members=not args.no_members)  # fmt: skip
    print(table(rows))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
