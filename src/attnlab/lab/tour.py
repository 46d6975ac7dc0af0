"""``attnlab tour``: every claim of the field stated, measured on real data, drawn, and judged from the numbers.

A tour writes into one directory::

    DIR/results.json           every claim's ClaimResult (see attnlab.lab.evidence), rewritten after each claim
    DIR/report.html            the self-contained report rendered from results.json
    DIR/figures/*.png          the figures
    DIR/claims/claim-N.json    one finished claim (a rerun skips it)
    DIR/runs/BUDGET/NAME/      each trained experiment (a rerun reuses it; an interrupted one resumes)

Claims share trained models: the length study, the multi-head and projection comparisons and the speed race all
read the same handful of reversal runs, trained once. Each claim declares what it trains (``@claim(...,
trains=...)``), under how many seeds (``seeds=``: a comparison rests on several, see
:mod:`attnlab.lab.claims._common`), and the criterion its verdict is judged by (``criterion=``, fixed before
anything runs and saved with the verdict; a finished claim whose criterion has changed since is measured again,
from its saved runs). With ``jobs > 1`` those trainings run ahead in that many worker processes of one thread each (the
models are small: two one-thread trainings do about twice the work of one two-thread training), while the claims
are measured in order as their runs finish. Ctrl-C leaves every finished claim and every checkpoint in place;
running the same command again continues.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import attnlab
from attnlab.experiments import (
    BUDGETS,
    G2PTask,
    LoadedModel,
    ReverseTask,
    evaluate_model,
    get_experiment,
    load_model,
    train_experiment,
)
from attnlab.train.checkpoint import atomic_write_bytes
from attnlab.train.trainer import MODEL_FILE

from .evidence import ClaimResult, Figure, Table, Verdict

__all__ = ["CLAIMS", "Claim", "Tour", "claim", "run_tour"]

RESULTS_FILE = "results.json"
REPORT_FILE = "report.html"


@dataclass
class Tour:
    """What a claim may use: a place for figures, and trained experiments (trained once, then reused)."""

    out: Path
    budget: str = "quick"
    seed: int = 0
    progress: bool = True
    log: Callable[[str], None] = print
    trained: list[str] = field(default_factory=list)
    pending: dict[Path, Future] = field(default_factory=dict)  # run dir -> its training in a worker process

    @property
    def runs(self) -> Path:
        return self.out / "runs" / self.budget

    def seeds(self, count: int | Mapping[str, int]) -> list[int]:
        """The seeds a claim trains under: this tour's seed and the ``count - 1`` after it (``count`` may depend
        on the budget: ``{"smoke": 3, "quick": 3, "full": 3}``)."""
        n = count if isinstance(count, int) else count[self.budget]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"seeds: expected a positive count for the {self.budget} budget, received {n!r}")
        return [self.seed + k for k in range(n)]

    def figure(self, name: str) -> tuple[Path, str]:
        """The path to write figure ``name`` (a PNG) and the name the report refers to it by."""
        relative = f"figures/{name}.png"
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, relative

    def run(
        self, experiment: str, budget: str | None = None, max_steps: int | None = None, seed: int | None = None
    ) -> Path:
        """The run directory of ``experiment`` at this tour's budget (or ``budget``; ``max_steps`` shortens its
        schedule; ``seed`` defaults to the tour's), training it first if needed: a finished run is reused, an
        interrupted one resumed."""
        budget = budget or self.budget
        seed = self.seed if seed is None else seed
        run = self.run_dir(experiment, budget, max_steps, seed)
        if run in self.pending:
            self.pending.pop(run).result()  # a worker's failure is raised here, in the claim that needs the run
        if not (run / MODEL_FILE).is_file():
            steps = "" if max_steps is None else f", {max_steps} steps"
            seeded = "" if seed == self.seed else f", seed {seed}"
            resuming = " (resuming)" if _resumable(run) else ""
            self.log(f"  training {experiment} ({budget} budget{steps}{seeded}){resuming}")
            _train(experiment, run, budget, max_steps, seed, self.progress)
            self.trained.append(experiment)
        return run

    def settle(self) -> None:
        """Wait until no training runs ahead, so that a timing taken next has the cores to itself (a failed
        training is still reported by the claim that reads it)."""
        concurrent.futures.wait(list(self.pending.values()))

    def run_dir(
        self, experiment: str, budget: str | None = None, max_steps: int | None = None, seed: int | None = None
    ) -> Path:
        """Where the run lives: ``runs/BUDGET/NAME`` for the tour's seed, ``NAME-seed-S`` for another seed (so the
        runs every claim shares keep their names)."""
        name = experiment if max_steps is None else f"{experiment}-{max_steps}-steps"
        if seed is not None and seed != self.seed:
            name = f"{name}-seed-{seed}"
        return self.out / "runs" / (budget or self.budget) / name

    def model(
        self, experiment: str, budget: str | None = None, max_steps: int | None = None, seed: int | None = None
    ) -> LoadedModel:
        return load_model(self.run(experiment, budget, max_steps, seed) / MODEL_FILE)

    def task(self, experiment: str, budget: str | None = None) -> Any:
        """The experiment's task at this tour's budget (its data, built once per process by the task itself)."""
        spec = get_experiment(experiment)
        return spec.make_task(**spec.budget(budget or self.budget).data)

    def evaluation(
        self, experiment: str, *, budget: str | None = None, seed: int | None = None, **options: Any
    ) -> dict[str, Any]:
        """The run's scores on its task's test split (``attnlab eval`` for G2P and reversal, with ``options``
        such as ``by_length=True``), cached in the run directory per set of options."""
        run = self.run(experiment, budget, seed=seed)
        key = "-".join(f"{k}={v}" for k, v in sorted(options.items())) or "default"
        cache = run / f"tour-eval-{key}.json"
        if cache.is_file():
            return json.loads(cache.read_text())
        task = self.task(experiment, budget)
        if isinstance(task, G2PTask | ReverseTask):
            scores = evaluate_model(task.name, run, **options)
        elif options:
            raise ValueError(f"{experiment}: evaluation options {sorted(options)} apply to G2P and reversal only")
        else:
            model = self.model(experiment, budget, seed=seed).model
            scores = task.evaluate(model, "test") if task.name == "canvas" else task.evaluate(model)
        atomic_write_bytes(cache, json.dumps(scores).encode())
        return scores

    def history(self, experiment: str, budget: str | None = None, seed: int | None = None) -> list[dict[str, Any]]:
        """The run's dev evaluations (step, metric, train_seconds, ...), oldest first."""
        path = self.run(experiment, budget, seed=seed) / "eval.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# What a claim trains: experiment names, or (name, max_steps) for part of a schedule; or a function of the tour.
Trainings = Sequence[str | tuple[str, int]] | Callable[[Tour], Sequence[str | tuple[str, int]]]
# Under how many seeds: one count, or one per budget.
Seeds = int | Mapping[str, int]


@dataclass(frozen=True)
class Claim:
    number: int
    title: str
    statement: str
    measure: Callable[[Tour], tuple[Verdict, list[Table], list[Figure], dict[str, Any]]]
    trains: Trainings = ()
    criterion: str = ""
    seeds: Seeds = 1

    def trainings(self, tour: Tour) -> list[tuple[str, int | None, int]]:
        """``(experiment, max_steps, seed)`` of every run the claim reads: each listed one under each seed."""
        listed = self.trains(tour) if callable(self.trains) else self.trains
        runs = [(item, None) if isinstance(item, str) else (item[0], item[1]) for item in listed]
        return [(experiment, steps, seed) for seed in tour.seeds(self.seeds) for experiment, steps in runs]


CLAIMS: dict[int, Claim] = {}


def claim(number: int, title: str, statement: str, *, criterion: str, trains: Trainings = (), seeds: Seeds = 1):
    """Register ``measure(tour) -> (verdict, tables, figures, numbers)`` as claim ``number``.

    ``criterion`` says, before anything runs, what makes the verdict "holds", "does not hold" or "inconclusive"
    (its thresholds are constants of the claim's module); it is saved and shown next to the verdict. ``trains``
    lists the experiments it reads, each trained under ``seeds`` seeds (``Tour.seeds``); they may be trained
    ahead, in parallel, and a run it reads but does not list is trained when it is asked for.
    """
    if not isinstance(criterion, str) or not criterion.strip():
        raise ValueError(f"claim {number} ({title!r}): criterion: expected the sentence its verdict is judged by")

    def register(measure: Callable[[Tour], tuple[Verdict, list[Table], list[Figure], dict[str, Any]]]):
        if number in CLAIMS:
            raise ValueError(f"claim {number} is registered twice ({CLAIMS[number].title!r}, {title!r})")
        CLAIMS[number] = Claim(number, title, statement, measure, trains, criterion, seeds)
        return measure

    return register


def _resumable(run: Path) -> bool:
    return (run / "run.json").is_file() and (run / "checkpoint").exists()


def _train(experiment: str, run: Path, budget: str, max_steps: int | None, seed: int, progress: bool) -> None:
    """Train ``experiment`` into ``run``: resume an interrupted run, start over anything else there."""
    resume = _resumable(run)
    train_experiment(
        experiment,
        run,
        budget=budget,
        max_steps=None if resume else max_steps,
        seed=None if resume else seed,
        resume=resume,
        force=not resume and run.exists(),
        progress=progress,
        verbose=False,
    )


def _train_in_worker(experiment: str, run: Path, budget: str, max_steps: int | None, seed: int) -> None:
    """One training in a worker process, on one thread, without progress bars."""
    torch.set_num_threads(1)
    _train(experiment, run, budget, max_steps, seed, progress=False)


def _train_ahead(tour: Tour, numbers: list[int], jobs: int) -> ProcessPoolExecutor | None:
    """Submit every unfinished training of the claims ``numbers`` to ``jobs`` one-thread worker processes."""
    wanted: dict[Path, tuple[str, int | None, int]] = {}
    for number in numbers:
        for experiment, max_steps, seed in CLAIMS[number].trainings(tour):
            run = tour.run_dir(experiment, max_steps=max_steps, seed=seed)
            if not (run / MODEL_FILE).is_file():
                wanted.setdefault(run, (experiment, max_steps, seed))
    if jobs < 2 or len(wanted) < 2:
        return None
    tour.log(f"  training {len(wanted)} experiments in {jobs} worker processes: {', '.join(p.name for p in wanted)}")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))
    for run, (experiment, max_steps, seed) in wanted.items():
        tour.pending[run] = pool.submit(_train_in_worker, experiment, run, tour.budget, max_steps, seed)
        tour.trained.append(experiment)
    return pool


def _claim_file(out: Path, number: int) -> Path:
    return out / "claims" / f"claim-{number}.json"


def _load_claims() -> None:
    from . import claims  # noqa: F401  (registers every claim)


def _finished(path: Path, budget: str, criterion: str) -> ClaimResult | None:
    """The saved result of a claim, unless it is damaged, of another budget, or judged by another criterion than
    the claim's current one (then it is measured again; its trained runs are reused)."""
    if not path.is_file():
        return None
    try:
        result = ClaimResult.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):  # damaged or from an older layout: measure again
        return None
    return result if result.budget == budget and result.criterion == criterion else None


def _write_outputs(
    out: Path, budget: str, entries: list[dict[str, Any]], started: float, threads: int
) -> dict[str, Any]:
    from attnlab.report import render

    results = {
        "attnlab_version": attnlab.__version__,
        "budget": budget,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seconds": round(time.time() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_threads": threads,
            "platform": platform.platform(),
        },
        "claims": entries,
    }
    atomic_write_bytes(out / RESULTS_FILE, (json.dumps(results, indent=1) + "\n").encode())
    render(results, out)
    return results


def run_tour(
    out: str | Path,
    *,
    budget: str = "quick",
    claims: Iterable[int] | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
    jobs: int = 2,
) -> dict[str, Any]:
    """Measure the claims (all by default) into ``out`` and render the report; returns results.json's content.

    ``jobs`` worker processes (one thread each) train the claims' experiments ahead; ``jobs=1`` trains each one in
    this process when a claim first asks for it. A claim that fails is recorded with its error (the report shows
    it) and the tour goes on with the next one; KeyboardInterrupt stops the tour, keeping everything finished so
    far (interrupted trainings resume on the next run).
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs: expected a positive int, received {jobs!r}")
    if budget not in BUDGETS:
        raise ValueError(f"budget: expected one of {BUDGETS}, received {budget!r}")
    _load_claims()
    wanted = sorted(CLAIMS) if claims is None else sorted(set(claims))
    unknown = [n for n in wanted if n not in CLAIMS]
    if unknown:
        raise ValueError(f"claims: unknown claim number(s) {unknown}; the tour has {sorted(CLAIMS)}")
    out = Path(out).expanduser()
    (out / "claims").mkdir(parents=True, exist_ok=True)
    tour = Tour(out, budget=budget, seed=seed, progress=progress, log=log)
    started = time.time()
    unfinished = [n for n in wanted if _finished(_claim_file(out, n), budget, CLAIMS[n].criterion) is None]
    pool = _train_ahead(tour, unfinished, jobs)
    threads = torch.get_num_threads()
    if pool is not None:
        torch.set_num_threads(1)  # the workers have the cores; measuring the claims is light
    try:
        return _measure_claims(tour, wanted, started, threads)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(threads)


def _measure_claims(tour: Tour, wanted: list[int], started: float, threads: int) -> dict[str, Any]:
    """Measure each claim in order (``threads``: the process's torch threads before the workers started)."""
    out, budget, log = tour.out, tour.budget, tour.log
    entries: list[dict[str, Any]] = []
    for number in wanted:
        spec = CLAIMS[number]
        path = _claim_file(out, number)
        done = _finished(path, budget, spec.criterion)
        if done is not None:
            log(f"claim {number:>2}: {spec.title}: {done.verdict.status} (done before)")
            log(f"          criterion: {spec.criterion}")
            entries.append(done.to_json())
            continue
        log(f"claim {number:>2}: {spec.title}")
        began = time.perf_counter()
        try:
            verdict, tables, figures, numbers = spec.measure(tour)
        except KeyboardInterrupt:
            _write_outputs(out, budget, entries, started, threads)
            raise
        except Exception as error:  # recorded, shown in the report; the other claims still run
            message = f"{type(error).__name__}: {error}"
            log(f"claim {number:>2}: failed: {message}")
            entries.append({"number": number, "title": spec.title, "statement": spec.statement,
                            "criterion": spec.criterion, "error": message, "budget": budget})  # fmt: skip
            continue
        result = ClaimResult(
            number,
            spec.title,
            spec.statement,
            verdict,
            tables,
            figures,
            numbers,
            seconds=round(time.perf_counter() - began, 1),
            budget=budget,
            command=f"attnlab tour --budget {budget} --claims {number}",
            criterion=spec.criterion,
        )
        atomic_write_bytes(path, json.dumps(result.to_json()).encode())
        entries.append(result.to_json())
        log(f"claim {number:>2}: {verdict.status}: {verdict.because} ({result.seconds:.0f} s)")
        log(f"          criterion: {spec.criterion}")
        if verdict.decides:
            log(f"          what would decide it: {verdict.decides}")
        _write_outputs(out, budget, entries, started, threads)
    return _write_outputs(out, budget, entries, started, threads)
