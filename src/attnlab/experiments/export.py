"""Ship a trained model: one weight file made from a run's weights, or from the average of several of them.

``attnlab export SOURCE... --out FILE [--dtype float16]``. With several sources the weights are averaged
parameter by parameter (checkpoint averaging: Vaswani et al. 2017 average the last checkpoints of a run, which
lands nearer the centre of the basin the late iterates circle than any one of them). Sources must rebuild the same
model for the same task. ``--dtype float16`` halves the file; :func:`~attnlab.experiments.models.load_model`
widens the weights back to the model's own dtype, and the export refuses a weight that does not fit the storage
type (a float16 overflow) instead of writing infinities.

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
    sources: Sequence[str | Path], out: str | Path, *, dtype: str = "float16", note: str | None = None
) -> dict[str, Any]:
    """Write ``out`` from ``sources`` (run directories or weight files; several are averaged); returns its
    ``export`` metadata.

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

    storage = STORAGE_DTYPES[dtype]
    averaged: dict[str, torch.Tensor] = {}
    for name, total in sums.items():
        if not total.is_floating_point():
            averaged[name] = total
            continue
        value = (total / len(paths)).to(storage)
        if not torch.isfinite(value).all():
            worst = float(total.abs().max() / len(paths))
            raise ValueError(f"tensor {name!r}: a weight of magnitude {worst:.3g} does not fit {dtype}; export "
                             "with --dtype float32 or bfloat16")  # fmt: skip
        averaged[name] = value.contiguous()

    export = {
        "sources": described,
        "averaged": len(paths),
        "storage_dtype": dtype,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **({"note": note} if note else {}),
    }
    metadata = {**first_meta, "step": max(d["step"] or 0 for d in described), "export": export,
                "storage_dtype": dtype}  # fmt: skip
    if len(paths) > 1:
        metadata["dev"] = None  # measured for each source, not for their average
    save_tensors(out, averaged, metadata)
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
