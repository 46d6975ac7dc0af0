"""What several claims share: one example's attention weights from a trained model, a trained run's numbers for a
comparison, the rule that judges a comparison over seeds, and number formatting."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnlab.data import collate_seq2seq
from attnlab.experiments import LoadedModel, task_from_spec

from ..evidence import Verdict


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
    tour: Any,
    experiment: str,
    test: dict[str, str],
    dev: dict[str, str] | None = None,
    speed: bool = False,
    seed: int | None = None,
) -> tuple[dict[str, Any], LoadedModel]:
    """A trained run's numbers for a comparison, and its model: ``experiment``, the test scores ``test`` names
    (``{name: score}``), the best dev value of each metric ``dev`` names (``{name: metric}``), ``parameters``, with
    ``speed`` the last dev evaluation's ``tokens_per_s``, and ``train_seconds`` (None for a run never evaluated).
    ``seed`` picks the run of another seed than the tour's."""
    scores = tour.evaluation(experiment, seed=seed)
    history, loaded = tour.history(experiment, seed=seed), tour.model(experiment, seed=seed)
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


# -- comparisons over seeds ---------------------------------------------------------------------------------------

MIN_SEEDS = 3  # a comparative verdict needs a spread: with fewer seeds per side it is inconclusive
SPREAD_FACTOR = 2.0  # a difference decides when it exceeds twice the larger seed standard deviation (and a floor)


def spread(values: Sequence[float]) -> float:
    """The sample standard deviation (0.0 for a single value)."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def mean_spread(values: Sequence[float], digits: int = 1, unit: str = "") -> str:
    """``mean +- std`` with ``unit`` (``"52.0 +- 2.0%"``), or the one value and "(1 seed)"."""
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}{unit} (1 seed)"
    return f"{mean:.{digits}f} +- {spread(values):.{digits}f}{unit}"


@dataclass(frozen=True)
class Comparison:
    """Whether ``claimed`` (one value per seed) beats ``other`` by more than the seed spread.

    ``margin`` is ``max(floor, SPREAD_FACTOR x the larger of the two standard deviations)``; ``outcome`` is
    ``"ahead"`` (mean difference above the margin), ``"behind"`` (below minus the margin), ``"level"`` (within it)
    or ``"too few seeds"`` (fewer than MIN_SEEDS on a side: no spread to judge against).
    """

    claimed: tuple[float, ...]
    other: tuple[float, ...]
    floor: float

    @classmethod
    def of(cls, claimed: Sequence[float], other: Sequence[float], floor: float) -> Comparison:
        if not claimed or not other:
            raise ValueError("Comparison: expected at least one value on each side")
        return cls(tuple(float(v) for v in claimed), tuple(float(v) for v in other), float(floor))

    @property
    def difference(self) -> float:
        return sum(self.claimed) / len(self.claimed) - sum(self.other) / len(self.other)

    @property
    def margin(self) -> float:
        return max(self.floor, SPREAD_FACTOR * max(spread(self.claimed), spread(self.other)))

    @property
    def seeds(self) -> int:
        return min(len(self.claimed), len(self.other))

    @property
    def outcome(self) -> str:
        if self.seeds < MIN_SEEDS:
            return "too few seeds"
        if self.difference > self.margin:
            return "ahead"
        if self.difference < -self.margin:
            return "behind"
        return "level"

    def describe(self, unit: str = " points", what: str = "difference") -> str:
        """``difference +4.1 points against a margin of 2.0 (3 seeds)``, or ``difference +4.1 points (1 seed)``
        where there are too few seeds for a margin."""
        if self.seeds < MIN_SEEDS:
            return f"{what} {self.difference:+.1f}{unit} ({self.seeds} seed{'s' if self.seeds > 1 else ''})"
        return f"{what} {self.difference:+.1f}{unit} against a margin of {self.margin:.1f} ({self.seeds} seeds)"


def full_budget_command(number: int) -> str:
    return f"attnlab tour --budget full --claims {number}"


def longer_budget_command(number: int, budget: str) -> str:
    """The tour command one budget up from ``budget`` for claim ``number`` (the smoke budget's is the quick)."""
    return f"attnlab tour --claims {number}" if budget == "smoke" else full_budget_command(number)


def possibility(tour: Any, number: int, shown: bool, because: str) -> Verdict:
    """The verdict of a possibility claim ("X works"): holds when shown; when not, inconclusive below the full
    budget (a model that has not learned in a short schedule says little about what it can learn) and does not
    hold at the full budget."""
    if shown:
        return Verdict("holds", because)
    if tour.budget == "full":
        return Verdict("does not hold", because)
    return Verdict.inconclusive(
        f"{because}; not shown at the {tour.budget} budget",
        f"a longer schedule: `{longer_budget_command(number, tour.budget)}`",
    )


def comparative(number: int, outcome: str, because: str, *, budget: str) -> Verdict:
    """The verdict of a comparative claim from its :class:`Comparison` outcome: ahead holds, behind does not
    hold; level and too few seeds are inconclusive and say what would decide (more seeds, a longer budget)."""
    if outcome == "ahead":
        return Verdict("holds", because)
    if outcome == "behind":
        return Verdict("does not hold", because)
    if outcome == "too few seeds":
        return Verdict.inconclusive(
            f"{because}; fewer than {MIN_SEEDS} seeds at the {budget} budget, so no seed spread to judge by",
            f"{MIN_SEEDS} seeds at the full budget: `{full_budget_command(number)}`",
        )
    longer = (
        "more seeds"
        if budget == "full"
        else f"more seeds or a longer budget (`{longer_budget_command(number, budget)}`)"
    )
    return Verdict.inconclusive(f"{because}; the difference is within the seed spread", longer)
