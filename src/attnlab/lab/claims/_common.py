"""What several claims share: one example's attention weights from a trained model, a trained run's numbers for a
comparison, and number formatting."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attnlab.data import collate_seq2seq
from attnlab.experiments import LoadedModel, task_from_spec


@torch.no_grad()
def example_weights(loaded: LoadedModel, source: list[str], target: list[str]) -> dict[str, np.ndarray]:
    """Every site's weights ``{site: [H, Tq, Tk]}`` for one (source, target) pair, teacher-forced.

    Queries are the decoder inputs ``[BOS, target...]``; the rows therefore say where the model looked while
    producing each target symbol (row ``i`` produces ``target[i]``, the last row produces EOS).
    """
    task = task_from_spec(loaded.task)
    batch = collate_seq2seq([(source, target)], task.src_vocab, task.tgt_vocab)
    output = loaded.model(batch, return_weights=True)
    return {name: weights[0].float().cpu().numpy() for name, weights in output.weights.items()}


def example_pair(tour: Any, experiment: str, length: int = 12) -> tuple[list[str], list[str]]:
    """One test pair of the experiment's task whose source is as close to ``length`` as there is, to draw."""
    task = task_from_spec(tour.model(experiment).task)
    return min(task.pairs("test"), key=lambda pair: abs(len(pair[0]) - length))


def parameters(loaded: LoadedModel) -> int:
    return int(loaded.metadata.get("parameters") or sum(p.numel() for p in loaded.model.parameters()))


def final_metric(history: list[dict[str, Any]], metric: str) -> float:
    """The best dev value of ``metric`` over a run's evaluations (higher is better)."""
    return max(float(row[metric]) for row in history) if history else float("nan")


def run_numbers(
    tour: Any, experiment: str, test: dict[str, str], dev: dict[str, str] | None = None, speed: bool = False
) -> tuple[dict[str, Any], LoadedModel]:
    """A trained run's numbers for a comparison, and its model: ``experiment``, the test scores ``test`` names
    (``{name: score}``), the best dev value of each metric ``dev`` names (``{name: metric}``), ``parameters``, with
    ``speed`` the last dev evaluation's ``tokens_per_s``, and ``train_seconds`` (None for a run never evaluated)."""
    scores, history, loaded = tour.evaluation(experiment), tour.history(experiment), tour.model(experiment)
    numbers = {"experiment": experiment, **{name: scores[score] for name, score in test.items()}}
    numbers.update({name: final_metric(history, metric) for name, metric in (dev or {}).items()})
    numbers["parameters"] = parameters(loaded)
    if speed:
        numbers["tokens_per_s"] = history[-1].get("tokens_per_s") if history else None
    numbers["train_seconds"] = history[-1]["train_seconds"] if history else None
    return numbers, loaded


def steps_to(history: list[dict[str, Any]], metric: str, target: float) -> int | None:
    """Training steps at the first dev evaluation reaching ``target`` (None if never)."""
    for row in history:
        if float(row[metric]) >= target:
            return int(row["step"])
    return None


def diagonality(weights: np.ndarray) -> float:
    """Fraction of query rows whose argmax key is monotone non-decreasing from the previous row's: how much an
    attention matrix ``[Tq, Tk]`` looks like a left-to-right alignment (1.0 for a perfect monotone path)."""
    best = weights.argmax(-1)
    return float(np.mean(best[1:] >= best[:-1])) if len(best) > 1 else 1.0
