"""Run experiments: train one into a run directory (``attnlab train``), evaluate a weight file (``attnlab eval``).

``train_experiment`` writes ``DIR/run.json`` (experiment, budget, seed, max-steps) next to what the
:class:`~attnlab.train.Trainer` writes, so ``--resume`` continues with the settings the run started with; an
explicit setting that contradicts them is refused rather than silently changing the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

import attnlab
from attnlab.train.checkpoint import atomic_write_bytes
from attnlab.train.distributed import init_from_env, shutdown
from attnlab.train.rundir import lock_run_dir, prepare_run_dir
from attnlab.train.trainer import MODEL_FILE, WEIGHTS_DIR, Trainer, TrainResult, check_keep_weights

from .base import get_experiment
from .models import MODEL_FORMAT, MODEL_FORMAT_VERSION, load_model, model_spec, parameter_count
from .tasks import G2PTask, ReverseTask, evenly_spaced, task_from_spec

__all__ = ["RUN_FILE", "SHIPPED_G2P_MODEL", "evaluate_model", "log_by_step", "resolve_model_path",
           "train_experiment", "training_at_step"]  # fmt: skip

RUN_FILE = "run.json"
SHIPPED_G2P_MODEL = Path(attnlab.__file__).parent / "assets" / "g2p" / "model.safetensors"
SPLITS = ("train", "dev", "test")


def _run_settings(
    run: Path, name: str, budget: str | None, seed: int | None, max_steps: int | None, resume: bool
) -> dict[str, Any]:
    """The run's settings: given ones (or the budget's) for a new run; for a resumed run the saved ones, checked
    against any given."""
    given = {"experiment": name, "budget": budget, "seed": seed, "max_steps": max_steps}
    if not resume:
        plan = get_experiment(name).budget(budget or "quick").train
        return {"experiment": name, "budget": budget or "quick", "seed": plan.seed if seed is None else seed,
                "max_steps": plan.max_steps if max_steps is None else max_steps}  # fmt: skip
    path = run / RUN_FILE
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"cannot resume {run}: {RUN_FILE} is missing (not made by `attnlab train`)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    for key, value in given.items():
        if value is not None and saved.get(key) != value:
            flag = "EXPERIMENT" if key == "experiment" else f"--{key.replace('_', '-')}"
            raise ValueError(
                f"cannot resume {run} with {flag} {value}: the run was started with {saved.get(key)!r}; "
                "leave it out to continue as started, or start a new run"
            )
    return saved


def train_experiment(
    name: str,
    out: str | Path,
    *,
    budget: str | None = None,
    seed: int | None = None,
    max_steps: int | None = None,
    resume: bool = False,
    force: bool = False,
    device: str = "auto",
    progress: bool | None = None,
    verbose: bool = True,
    keep_weights: int = 0,
) -> TrainResult:
    """Train experiment ``name`` into the run directory ``out`` (``budget`` defaults to ``"quick"``).

    ``keep_weights``: keep the weights of the last K checkpoints under ``out/weights/`` (see
    :class:`~attnlab.train.Trainer`); an output option, so a resumed run may change it.

    Under ``torchrun`` every process calls this; rank 0 prepares the directory and writes all files.

    Raises:
        KeyError: unknown experiment or budget.
        RunDirExistsError / NothingToResumeError: see :func:`attnlab.train.rundir.prepare_run_dir`.
        ValueError: resume settings that contradict the run's; NonFiniteLossError: the loss diverged.
    """
    experiment = get_experiment(name)
    # Unknown budget (KeyError) or a bad --seed/--max-steps/--keep-weights fail before the disk is touched.
    given = {"seed": seed, "max_steps": max_steps}
    dataclasses.replace(experiment.budget(budget or "quick").train, **{k: v for k, v in given.items() if v is not None})
    check_keep_weights(keep_weights)
    ctx = init_from_env(device)
    held = contextlib.ExitStack()  # rank 0 holds the run directory's lock from here to the end of training
    try:

        def prepare() -> Path:
            run = prepare_run_dir(out, force=force, resume=resume)
            held.enter_context(lock_run_dir(run))  # fit re-enters it; nothing else writes run.json meanwhile
            settings = _run_settings(run, name, budget, seed, max_steps, resume)
            if not resume:
                atomic_write_bytes(run / RUN_FILE, (json.dumps(settings, indent=2) + "\n").encode())
            return run

        run = ctx.on_main(prepare, f"prepare the run directory {out}") or Path(out).expanduser()
        settings = json.loads((run / RUN_FILE).read_text())
        plan = experiment.budget(settings["budget"])
        config = dataclasses.replace(plan.train, seed=settings["seed"], max_steps=settings["max_steps"])

        torch.manual_seed(config.seed)  # the model's initial weights
        task = experiment.make_task(**plan.data)
        model = experiment.make_model(task, **plan.model)
        metadata = {
            "format": MODEL_FORMAT,
            "version": MODEL_FORMAT_VERSION,
            "experiment": name,
            "budget": settings["budget"],
            "model": model_spec(model),
            "parameters": parameter_count(model),
            "task": task.spec(),
        }
        trainer = Trainer(model, config, task.train_data(), run, validation=task.validation(), metadata=metadata,
                          dist=ctx, progress=progress, verbose=verbose, keep_weights=keep_weights)  # fmt: skip
        return trainer.fit(resume=resume)
    finally:
        held.close()
        shutdown(ctx)


def log_by_step(path: Path) -> dict[int, dict[str, Any]]:
    """A run's JSON-lines log (``train.jsonl``, ``eval.jsonl``) as ``{step: row}``, the last row of each step (a
    resumed run may repeat one). A last line that does not parse is a write in progress or cut by a kill, and is
    left out, as the trainer does on resume.

    Raises:
        ValueError: any other line that is not a JSON object with an int ``step``.
    """
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    rows = {}
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number}: not valid JSON (only a torn last line is skipped)") from None
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            raise ValueError(f"{path}:{number}: expected a JSON object with an int 'step', received {line:.80}")
        rows[row["step"]] = row
    return rows


def training_at_step(weights: Path, step: int | None) -> dict[str, Any]:
    """``{"train_seconds", "tokens_per_s"}`` of the run that wrote ``weights`` at ``step``, from the ``eval.jsonl``
    beside them, or of the run above for a file in its ``weights/`` folder (``--keep-weights``): optimizer seconds and
    speed up to that step. ``{}`` when there is no such log, step or readable log (it only describes the weights; it
    never stops their export or scoring)."""
    folder = Path(weights).parent
    log = (folder.parent if folder.name == WEIGHTS_DIR else folder) / "eval.jsonl"
    if step is None or not log.is_file():
        return {}
    try:
        row = log_by_step(log).get(step)
    except ValueError:
        return {}
    return {} if row is None else {"train_seconds": row.get("train_seconds"), "tokens_per_s": row.get("tokens_per_s")}


def resolve_model_path(model: str | Path | None) -> Path:
    """A weight file from ``--model``: a file as is, a run directory's ``model.safetensors``, or (None) the
    shipped G2P model."""
    if model is None:
        if not SHIPPED_G2P_MODEL.is_file():
            raise FileNotFoundError(
                f"no --model given and no shipped model at {SHIPPED_G2P_MODEL} yet; train one "
                "(attnlab train g2p-transformer --out runs/g2p --budget full) and pass --model runs/g2p"
            )
        return SHIPPED_G2P_MODEL
    path = Path(model)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{path} has no {MODEL_FILE} (a run writes it when training ends; resume it with --resume, or pass "
                f"{path / 'best.safetensors'} for the best weights so far)"
            )
        return path / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"--model {path}: no such file or directory")
    return path


def evaluate_model(
    task_name: str,
    model: str | Path | None = None,
    *,
    split: str = "test",
    beam: int = 1,
    limit: int | None = None,
    by_length: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score a weight file on ``split`` of its task: the dict ``attnlab eval --json`` prints.

    G2P: ``wer``, ``per``, ``wer_no_stress``, ``per_no_stress`` (percent; ``wer`` and ``per`` are None for a model
    trained without stress) and ``words``; reverse: ``accuracy``, ``token_accuracy`` and ``sequences``. ``limit``
    keeps that many items, evenly spaced.
    """
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, received {split!r}")
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise ValueError(f"beam: expected a positive int, received {beam!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit: expected a positive int, received {limit!r}")
    path = resolve_model_path(model)
    loaded = load_model(path, device=torch.device(device))
    task = task_from_spec(loaded.task)
    if task.name != task_name:
        raise ValueError(f"{path}: the model was trained for task {task.name!r}, not {task_name!r}")
    started = time.perf_counter()
    if isinstance(task, G2PTask):
        scores = task.evaluate(loaded.model, task.entries(split, limit), beam=beam, by_length=by_length)
        count = scores["words"]
    elif isinstance(task, ReverseTask):
        scores = task.evaluate(loaded.model, evenly_spaced(task.pairs(split), limit), beam=beam, by_length=by_length)
        count = scores["sequences"]
    else:
        raise ValueError(f"{path}: no evaluation for task {task.name!r}")
    seconds = time.perf_counter() - started
    meta = loaded.metadata
    return {
        "task": task.name,
        "split": split,
        **scores,
        "decode": "greedy" if beam == 1 else f"beam-{beam}",
        "model": str(path),
        "experiment": meta.get("experiment"),
        "step": meta.get("step"),
        "parameters": meta.get("parameters"),
        "seconds": round(seconds, 3),
        "items_per_s": round(count / seconds, 1) if seconds > 0 else None,
    }
