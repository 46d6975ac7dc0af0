"""Ship a trained model: one weight file made from a run's weights, the average of several, or an ensemble.

``attnlab export SOURCE... --out FILE [--dtype float16] [--ensemble]``. With several sources the weights are
averaged parameter by parameter (checkpoint averaging: Vaswani et al. 2017 average the last checkpoints of a run,
which lands nearer the centre of the basin the late iterates circle than any one of them: train with
``--keep-weights K`` and pass ``RUN/weights/*.safetensors``); sources must then rebuild the same model for the same
task. With ``--ensemble`` the sources may be different models of one task
(same vocabularies): the file holds an :class:`~attnlab.seq.Ensemble` of them, which decodes with the mean of
their next-token distributions, its weights under ``members.I.``. ``--dtype float16`` halves the file;
:func:`~attnlab.experiments.models.load_model` widens the weights back to the model's own dtype, and the export
refuses a weight that does not fit the storage type (a float16 overflow) instead of writing infinities.

An average keeps the first source's metadata (model, task, experiment, training config); an ensemble keeps the
task and describes itself (``experiment`` is ``ensemble(A, B)``, ``parameters`` the members' sum). Both add
``export``: each source's path, step, dev scores and the run's training seconds and speed at that step (from its
``eval.jsonl``), and the storage dtype. ``dev`` of an average or an ensemble is None: nobody has measured it yet
(``attnlab eval g2p --split dev --model FILE`` does).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attnlab.seq.ensemble import normalised_weights
from attnlab.train.checkpoint import load_tensors, save_tensors

from .models import MODEL_FORMAT, STORAGE_DTYPES, load_model
from .run import resolve_model_path, training_at_step
from .tasks import TASKS, task_from_spec

__all__ = ["export_model"]


def _same(what: str, first: Any, other: Any, path: Path, first_path: Path) -> None:
    if first != other:
        raise ValueError(f"{path}: its {what} differs from {first_path}'s; only weights of one model can be averaged")


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A source's tensors and metadata, refused unless it is an attnlab model file with finite weights."""
    tensors, meta = load_tensors(path)
    if meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"{path}: expected an attnlab model file, received metadata format {meta.get('format')!r}")
    if not isinstance(meta.get("model"), dict) or not isinstance(meta.get("task"), dict):
        raise ValueError(f"{path}: its metadata has no model or task description; pass a file written by attnlab")
    if meta["task"].get("name") in TASKS:  # canonical spec: files from older versions compare equal
        meta = {**meta, "task": task_from_spec(meta["task"]).spec()}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: tensor {name!r} holds NaN or infinite weights; nothing to ship")
    return tensors, meta


def export_model(
    sources: Sequence[str | Path],
    out: str | Path,
    *,
    dtype: str = "float16",
    note: str | None = None,
    ensemble: bool = False,
    weights: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Write ``out`` from ``sources`` (run directories or weight files; several are averaged, or with ``ensemble``
    combined as an :class:`~attnlab.seq.Ensemble`, uniformly or by ``weights``, one per source); returns its
    ``export`` metadata. ``out`` is replaced only by a file that has been loaded back successfully: on any failure
    an existing ``out`` is left as it was.

    Raises:
        ValueError: no sources, an unknown ``dtype``, sources of different models or tasks, a source that is not
            an attnlab model file or holds NaN/Inf, a weight outside ``dtype``'s range, an ensemble of fewer than
            two models or of an ensemble.
        CheckpointError: a damaged source.
    """
    if isinstance(sources, str | Path) or not isinstance(sources, Sequence) or not sources:
        raise ValueError(f"sources: expected one or more weight files or run directories, received {sources!r}")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(STORAGE_DTYPES)}, received {dtype!r}")
    paths = [resolve_model_path(source) for source in sources]
    if len(set(map(Path.resolve, paths))) != len(paths):
        raise ValueError(f"sources: the same weight file is named twice in {[str(p) for p in paths]}")
    out = Path(out)
    if out.resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"--out {out}: is one of the sources; write the export to a new file")
    if weights is not None and not ensemble:
        raise ValueError("weights: only an ensemble has member weights; pass ensemble=True (--ensemble)")
    read = [_read(path) for path in paths]
    if ensemble:
        tensors, metadata = _ensemble(paths, read, weights)
    else:
        tensors, metadata = _average(paths, read)
    described = [_describe(path, meta) for path, (_, meta) in zip(paths, read, strict=True)]
    return _write(out, tensors, metadata, described, dtype, note, averaged=1 if ensemble else len(paths))


def _average(
    paths: Sequence[Path], read: Sequence[tuple[dict[str, torch.Tensor], dict[str, Any]]]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The parameter-wise mean of weight files of one model (float64 sums; integer buffers must agree)."""
    (first_tensors, first_meta), first_path = read[0], paths[0]
    sums = {name: t.to(torch.float64) if t.is_floating_point() else t for name, t in first_tensors.items()}
    for path, (tensors, meta) in zip(paths[1:], read[1:], strict=True):
        for key in ("version", "model", "task"):
            _same(key, first_meta.get(key), meta.get(key), path, first_path)
        _same("tensor names", sorted(first_tensors), sorted(tensors), path, first_path)
        for name, tensor in tensors.items():  # stored dtypes may differ (an export beside its run): shapes must not
            _same(f"tensor {name!r} shape", first_tensors[name].shape, tensor.shape, path, first_path)
            if tensor.is_floating_point():
                sums[name] += tensor.to(torch.float64)
            else:
                _same(f"integer tensor {name!r}", True, torch.equal(sums[name], tensor), path, first_path)
    averaged = {name: total / len(paths) if total.is_floating_point() else total for name, total in sums.items()}
    metadata = {**first_meta, "step": max((meta.get("step") or 0) for _, meta in read)}
    if len(paths) > 1:
        metadata["dev"] = None  # measured for each source, not for their average
    return averaged, metadata


def _ensemble(
    paths: Sequence[Path],
    read: Sequence[tuple[dict[str, torch.Tensor], dict[str, Any]]],
    weights: Sequence[float] | None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One Ensemble file's tensors (``members.I.NAME``) and metadata from member weight files of one task."""
    if len(paths) < 2:
        raise ValueError(f"--ensemble: expected at least two models, received {len(paths)}")
    normalised = normalised_weights(weights, len(paths))  # refuses a wrong count or a bad weight
    first_meta = read[0][1]
    tensors, specs, experiments, parameters = {}, [], [], 0
    for i, (path, (member, meta)) in enumerate(zip(paths, read, strict=True)):
        for key in ("version", "task"):
            _same(key, first_meta.get(key), meta.get(key), path, paths[0])
        if meta["model"].get("class") == "Ensemble":
            raise ValueError(f"{path}: is an ensemble already; pass its members' weight files instead (an ensemble "
                             "of ensembles would weigh their members unevenly)")  # fmt: skip
        tensors.update({f"members.{i}.{name}": tensor for name, tensor in member.items()})
        specs.append(meta["model"])
        experiments.append(str(meta.get("experiment")))
        parameters += sum(t.numel() for t in member.values())
    metadata = {key: first_meta[key] for key in ("format", "version", "task") if key in first_meta}
    metadata |= {"model": {"class": "Ensemble", "config": {"members": specs, "weights": list(normalised)}},
                 "experiment": f"ensemble({', '.join(experiments)})", "parameters": parameters, "dev": None,
                 "step": None}  # fmt: skip
    return tensors, metadata


def _write(
    out: Path,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, Any],
    described: list[dict[str, Any]],
    dtype: str,
    note: str | None,
    *,
    averaged: int,
) -> dict[str, Any]:
    """Cast to the storage dtype, write beside ``out``, load it back, then move it over ``out``."""
    storage = STORAGE_DTYPES[dtype]
    stored: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            stored[name] = tensor
            continue
        value = tensor.to(storage)
        if not torch.isfinite(value).all():
            worst = float(tensor.abs().max())
            raise ValueError(f"tensor {name!r}: a weight of magnitude {worst:.3g} does not fit {dtype}; export "
                             "with --dtype float32 or bfloat16")  # fmt: skip
        stored[name] = value.contiguous()
    export = {
        "sources": described,
        "averaged": averaged,
        "ensemble": len(described) if metadata["model"].get("class") == "Ensemble" else None,
        "storage_dtype": dtype,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **({"note": note} if note else {}),
    }
    trial = out.with_name(f".{out.name}.export-trial")
    try:
        save_tensors(trial, stored, {**metadata, "export": export, "storage_dtype": dtype})
        load_model(trial)  # the file must load as written before it replaces anything
        os.replace(trial, out)
    finally:
        trial.unlink(missing_ok=True)
    return export


def _describe(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """A source: its path, step and dev scores, and the run's training seconds and speed at that step."""
    return {"path": str(path), "step": meta.get("step"), "dev": meta.get("dev"),
            **training_at_step(path, meta.get("step"))}  # fmt: skip
