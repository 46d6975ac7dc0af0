"""Ship a trained model: one weight file made from a run's weights, the average of several, or an ensemble.

``attnlab export SOURCE... --out FILE [--dtype float16] [--ensemble]``. With several sources the weights are
averaged parameter by parameter (checkpoint averaging: Vaswani et al. 2017 average the last checkpoints of a run,
which lands nearer the centre of the basin the late iterates circle than any one of them); sources must then
rebuild the same model for the same task. With ``--ensemble`` the sources may be different models of one task
(same vocabularies): the file holds an :class:`~attnlab.seq.Ensemble` of them, which decodes with the mean of
their next-token distributions, its weights under ``members.I.``. ``--dtype float16`` halves the file;
:func:`~attnlab.experiments.models.load_model` widens the weights back to the model's own dtype, and the export
refuses a weight that does not fit the storage type (a float16 overflow) instead of writing infinities.

The file keeps the first source's metadata (model, task, experiment, training config) and adds ``export``: each
source's path, step and dev scores, and the storage dtype. ``dev`` of an average is None: nobody has measured it
yet (``attnlab eval g2p --split dev --model FILE`` does).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attnlab.train.checkpoint import load_tensors, save_tensors

from .models import MODEL_FORMAT, STORAGE_DTYPES, load_model
from .run import resolve_model_path

__all__ = ["export_model"]


def _same(what: str, first: Any, other: Any, path: Path, first_path: Path) -> None:
    if first != other:
        raise ValueError(f"{path}: its {what} differs from {first_path}'s; only weights of one model can be averaged")


def export_model(
    sources: Sequence[str | Path],
    out: str | Path,
    *,
    dtype: str = "float16",
    note: str | None = None,
    ensemble: bool = False,
) -> dict[str, Any]:
    """Write ``out`` from ``sources`` (run directories or weight files; several are averaged, or with ``ensemble``
    combined as an :class:`~attnlab.seq.Ensemble`); returns its ``export`` metadata.

    Raises:
        ValueError: no sources, an unknown ``dtype``, sources of different models or tasks, a source that is not
            an attnlab model file, or a weight outside ``dtype``'s range.
        CheckpointError: a damaged source.
    """
    if isinstance(sources, str | Path) or not sources:
        raise ValueError(f"sources: expected one or more weight files or run directories, received {sources!r}")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(STORAGE_DTYPES)}, received {dtype!r}")
    paths = [resolve_model_path(source) for source in sources]
    if len(set(map(Path.resolve, paths))) != len(paths):
        raise ValueError(f"sources: the same weight file is named twice in {[str(p) for p in paths]}")
    out = Path(out)
    if out.resolve() in {p.resolve() for p in paths}:
        raise ValueError(f"--out {out}: is one of the sources; write the export to a new file")

    first_tensors, first_meta = load_tensors(paths[0])
    if first_meta.get("format") != MODEL_FORMAT:
        raise ValueError(f"{paths[0]}: expected an attnlab model file, received metadata format "
                         f"{first_meta.get('format')!r}")  # fmt: skip
    if ensemble:
        tensors, metadata, described = _ensemble(paths, first_tensors, first_meta)
        return _write(out, tensors, metadata, described, dtype, note, averaged=1)
    sums = {name: t.to(torch.float64) if t.is_floating_point() else t for name, t in first_tensors.items()}
    described = [_describe(paths[0], first_meta)]
    for path in paths[1:]:
        tensors, meta = load_tensors(path)
        for key in ("format", "version", "model", "task"):
            _same(key, first_meta.get(key), meta.get(key), path, paths[0])
        _same("tensor names", sorted(first_tensors), sorted(tensors), path, paths[0])
        for name, tensor in tensors.items():
            _same(f"tensor {name!r} shape and dtype", (first_tensors[name].shape, first_tensors[name].dtype),
                  (tensor.shape, tensor.dtype), path, paths[0])  # fmt: skip
            if tensor.is_floating_point():
                sums[name] += tensor.to(torch.float64)
            else:
                _same(f"integer tensor {name!r}", True, torch.equal(sums[name], tensor), path, paths[0])
        described.append(_describe(path, meta))

    averaged = {name: total / len(paths) if total.is_floating_point() else total for name, total in sums.items()}
    metadata = {**first_meta, "step": max(d["step"] or 0 for d in described)}
    if len(paths) > 1:
        metadata["dev"] = None  # measured for each source, not for their average
    return _write(out, averaged, metadata, described, dtype, note, averaged=len(paths))


def _ensemble(
    paths: Sequence[Path], first_tensors: dict[str, torch.Tensor], first_meta: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[dict[str, Any]]]:
    """One Ensemble file's tensors (``members.I.NAME``) and metadata from member weight files of one task."""
    tensors, specs, experiments, described, parameters = {}, [], [], [], 0
    for i, path in enumerate(paths):
        member, meta = (first_tensors, first_meta) if i == 0 else load_tensors(path)
        for key in ("format", "version", "task"):
            _same(key, first_meta.get(key), meta.get(key), path, paths[0])
        tensors.update({f"members.{i}.{name}": tensor for name, tensor in member.items()})
        specs.append(meta["model"])
        experiments.append(str(meta.get("experiment")))
        parameters += int(meta.get("parameters") or sum(t.numel() for t in member.values()))
        described.append(_describe(path, meta))
    metadata = {**first_meta, "model": {"class": "Ensemble", "config": {"members": specs}},
                "experiment": f"ensemble({', '.join(experiments)})", "parameters": parameters, "dev": None,
                "step": None, "train_config": None}  # fmt: skip
    return tensors, metadata, described


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
    save_tensors(out, stored, {**metadata, "export": export, "storage_dtype": dtype})
    load_model(out)  # the file must load as written; raises (and names it) if not
    return export


def _describe(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    summary = path.parent / "summary.json"
    trained: dict[str, Any] = {}
    if summary.is_file():  # a run's final weights: how long training took
        try:
            data = json.loads(summary.read_text())
            trained = {key: data.get(key) for key in ("train_seconds", "tokens_per_s", "stop_reason")}
        except (OSError, json.JSONDecodeError):
            trained = {}
    return {"path": str(path), "step": meta.get("step"), "dev": meta.get("dev"), **trained}
