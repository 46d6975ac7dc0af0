"""What an experiment is: a task (data + dev metric), a model factory, and one training plan per budget.

Budgets are sized by wall-clock intent on a 2-core CPU: ``smoke`` (seconds: a tiny model on a tiny subset, to
check that the pipeline runs), ``quick`` (minutes: a small model that visibly learns) and ``full`` (hours: the
model and schedule meant for the reported results). A :class:`Budget` holds the :class:`TrainConfig`, the model
config fields and the task options (how much data, how many dev words); nothing else varies between budgets.

The registry is open: ``@register`` (or :func:`register`) adds an :class:`Experiment`; an unknown name raises
``KeyError`` listing what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from attnlab.train.trainer import TrainConfig, TrainData, Validation

__all__ = [
    "BUDGETS",
    "GRID_SCORES",
    "Budget",
    "Experiment",
    "Task",
    "available_experiments",
    "get_experiment",
    "register",
]

# the score grid (claim 8): every score of the core, as AT in an RNN decoder and as SA in a Transformer
GRID_SCORES = ("dot", "scaled_dot", "general", "additive", "cosine", "location")
BUDGETS = ("smoke", "quick", "full")


class Task(Protocol):
    """A dataset with its dev metric. ``spec()`` is plain JSON (vocabularies included) from which
    ``from_spec`` rebuilds the task for evaluation, stored in every weight file."""

    name: str

    def spec(self) -> dict[str, Any]: ...

    def train_data(self) -> TrainData: ...

    def validation(self) -> Validation: ...


@dataclass(frozen=True)
class Budget:
    """One training plan: how to train, how big the model is, how much data."""

    train: TrainConfig
    model: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """A named experiment: ``make_task(**budget.data)`` builds the task, ``make_model(task, **budget.model)`` the
    model (any module with a ``config`` dataclass listed in :mod:`attnlab.experiments.models`)."""

    name: str
    description: str
    make_task: Callable[..., Task]
    make_model: Callable[..., nn.Module]
    budgets: Mapping[str, Budget]

    def __post_init__(self) -> None:
        if missing := [b for b in BUDGETS if b not in self.budgets]:
            raise ValueError(f"Experiment {self.name!r}: budgets: expected {list(BUDGETS)}, missing {missing}")
        if "\n" in self.description:
            raise ValueError(f"Experiment {self.name!r}: description: expected one line")

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise KeyError(f"budget: expected one of {sorted(self.budgets)}, received {name!r}")
        return self.budgets[name]


_REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to the registry (a duplicate name is refused)."""
    if not isinstance(experiment, Experiment):
        raise TypeError(f"experiment: expected an Experiment, received {type(experiment).__name__}")
    if experiment.name in _REGISTRY:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    _REGISTRY[experiment.name] = experiment
    return experiment


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name``; ``KeyError`` lists the names that exist."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown experiment {name!r}; available: {', '.join(available_experiments())}")
    return _REGISTRY[name]


def available_experiments() -> list[str]:
    """Registered names, in registration order."""
    return list(_REGISTRY)


def experiment_table() -> Mapping[str, Experiment]:
    return dict(_REGISTRY)
