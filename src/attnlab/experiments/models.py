"""Model files: the JSON that rebuilds a model, and loading a trained ``model.safetensors`` without code changes.

A weight file written by a training run carries (in its safetensors metadata, see
:func:`attnlab.train.checkpoint.save_tensors`)::

    {"format": "attnlab-model", "version": 1,
     "model": {"class": "Transformer", "config": {...every TransformerConfig field...}},
     "task": {"name": "g2p", "src_vocab": [...], "tgt_vocab": [...], ...},
     "experiment": "g2p-transformer", "budget": "full", "step": 12000, "dev": {...}, "train_config": {...}}

:func:`load_model` reads it, rebuilds the model from ``model.class`` and ``model.config`` (the config dataclass
validates every field), loads the weights after checking names, shapes and dtypes, and returns the rest.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnlab.attention import upgrade_state_dict
from attnlab.seq import (
    DecoderOnlyConfig,
    DecoderOnlyTransformer,
    EncoderConfig,
    Ensemble,
    RNNConfig,
    RNNSeq2Seq,
    Transformer,
    TransformerClassifier,
    TransformerConfig,
)
from attnlab.train.checkpoint import CheckpointError, apply_model_state, load_tensors

from .reader import CrossReaderConfig, CrossReaderModel, SingleStreamConfig, SingleStreamReaderModel
from .vision import CanvasCNN, CanvasCNNConfig, CanvasViT, CanvasViTConfig

__all__ = ["MODELS", "MODEL_FORMAT", "STORAGE_DTYPES", "LoadedModel", "build_model", "load_model", "model_spec",
           "parameter_count"]  # fmt: skip

MODEL_FORMAT = "attnlab-model"
MODEL_FORMAT_VERSION = 1
# how a file may store its floating weights (metadata "storage_dtype", written by attnlab.experiments.export);
# loading widens them to the model's own dtype
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# class name -> (module class, its config dataclass)
MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "RNNSeq2Seq": (RNNSeq2Seq, RNNConfig),
    "Transformer": (Transformer, TransformerConfig),
    "DecoderOnlyTransformer": (DecoderOnlyTransformer, DecoderOnlyConfig),
    "TransformerClassifier": (TransformerClassifier, EncoderConfig),
    "CrossReaderModel": (CrossReaderModel, CrossReaderConfig),
    "SingleStreamReaderModel": (SingleStreamReaderModel, SingleStreamConfig),
    "CanvasCNN": (CanvasCNN, CanvasCNNConfig),
    "CanvasViT": (CanvasViT, CanvasViTConfig),
}


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``{"class", "config"}`` (plain JSON) for a model listed in :data:`MODELS`, or an
    :class:`~attnlab.seq.Ensemble` of them (``{"class": "Ensemble", "config": {"members": [spec, ...],
    "weights": [w, ...]}}``; files without ``weights`` mean uniform ones)."""
    if isinstance(model, Ensemble):
        members = [model_spec(member) for member in model.members]
        return {"class": "Ensemble", "config": {"members": members, "weights": list(model.weights)}}
    name = type(model).__name__
    if name not in MODELS or not isinstance(model, MODELS[name][0]):
        raise TypeError(f"model: expected one of {sorted(MODELS)}, received {type(model).__qualname__}")
    return {"class": name, "config": dataclasses.asdict(model.config)}


def build_model(spec: dict[str, Any]) -> nn.Module:
    """A fresh (randomly initialised) model from :func:`model_spec`'s output."""
    if not isinstance(spec, dict) or not {"class", "config"} <= spec.keys():
        raise ValueError(f"model spec: expected {{'class': ..., 'config': {{...}}}}, received {spec!r:.200}")
    name = spec["class"]
    if name == "Ensemble":
        config = spec["config"]
        if not isinstance(config, dict) or not {"members"} <= set(config) <= {"members", "weights"} \
                or not isinstance(config["members"], list) or not config["members"]:  # fmt: skip
            raise ValueError(f"model spec: Ensemble: expected config {{'members': [spec, ...], 'weights': [...]}} "
                             f"and nothing else, received {config!r:.200}")  # fmt: skip
        return Ensemble([build_model(member) for member in config["members"]], config.get("weights"))
    if name not in MODELS:
        raise ValueError(f"model spec: class: expected one of {sorted(MODELS)}, received {name!r}")
    module_class, config_class = MODELS[name]
    fields = {f.name for f in dataclasses.fields(config_class)}
    config = spec["config"]
    if not isinstance(config, dict):
        raise ValueError(f"model spec: config: expected a JSON object, received {type(config).__name__}")
    if unknown := sorted(set(config) - fields):
        raise ValueError(f"model spec: config: unknown fields for {config_class.__name__}: {unknown}")
    return module_class(config_class(**config))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class LoadedModel:
    """A model rebuilt from a weight file (in eval mode), with the file's metadata."""

    model: nn.Module
    metadata: dict[str, Any]
    path: Path

    @property
    def task(self) -> dict[str, Any]:
        return self.metadata["task"]


def _widen(tensors: dict[str, torch.Tensor], storage: Any, model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Floating weights stored as ``storage`` (an exported file) cast to the dtype the model holds them in."""
    if storage not in STORAGE_DTYPES:
        raise ValueError(f"{path}: storage_dtype: expected one of {sorted(STORAGE_DTYPES)}, received {storage!r}")
    expected = model.state_dict()
    widened = dict(tensors)
    for name, tensor in tensors.items():
        if name in expected and tensor.is_floating_point() and expected[name].is_floating_point():
            if tensor.dtype != STORAGE_DTYPES[storage]:
                raise CheckpointError(f"{path}: {name}: the file says its weights are {storage}, this one is "
                                      f"{tensor.dtype}")  # fmt: skip
            widened[name] = tensor.to(expected[name].dtype)
    return widened


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild and load the model in a weight file written by a training run (never unpickles).

    Raises:
        CheckpointError: missing/damaged file, or weights that do not fit the model the metadata describes.
        ValueError: the file has no attnlab model metadata (e.g. a safetensors file from elsewhere).
    """
    path = Path(path)
    tensors, metadata = load_tensors(path)
    if metadata.get("format") != MODEL_FORMAT:
        raise ValueError(
            f"{path}: expected an attnlab model file (metadata format {MODEL_FORMAT!r}), received "
            f"{metadata.get('format')!r}; pass a model.safetensors written by `attnlab train`"
        )
    if metadata.get("version") != MODEL_FORMAT_VERSION:
        raise ValueError(f"{path}: expected model format version {MODEL_FORMAT_VERSION}, received "
                         f"{metadata.get('version')!r}")  # fmt: skip
    if not isinstance(metadata.get("task"), dict):
        raise ValueError(f"{path}: metadata has no task description")
    try:
        model = build_model(metadata.get("model"))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model: {exc}") from None
    tensors = upgrade_state_dict(model, tensors)  # files from before the attention modules' one layout
    if "storage_dtype" in metadata:
        tensors = _widen(tensors, metadata["storage_dtype"], model, path)
    apply_model_state(model, tensors, source=path)
    return LoadedModel(model.to(device).eval(), metadata, path)
