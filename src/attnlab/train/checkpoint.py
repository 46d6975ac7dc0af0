"""Checkpoints: safetensors for every tensor, JSON for everything else; atomic saves; loading never unpickles.

What a checkpoint holds: the model's tensors, the optimizer and LR-scheduler state (tensors flattened into the
tensor file under stable keys, the nested Python structure kept in JSON), the RNG states (torch CPU, CUDA when
available, Python ``random``, numpy's global generator when numpy is imported) and ``extra``, the caller's
training state (config, step, data position, loss log).

Layout of a checkpoint directory (``root``)::

    root/
      LATEST                   {"snapshot": "ckpt-000042", "manifest_sha256": "..."}  <- the commit point
      ckpt-000042/
        manifest.json          format, SHA-256 and size of each tensor file, optimizer/scheduler/RNG/extra as JSON
        model.safetensors      the model's state dict, loadable by any safetensors reader
        state.safetensors      optimizer, scheduler, RNG and extra tensors, keyed e.g. "optimizer.state.0.exp_avg"
      .tmp-ckpt-<random>/      a save in progress (or killed); removed by the next save

Atomicity scheme (one writer per ``root``):

1. Everything is encoded in memory first, so a non-JSON-able value fails before the disk is touched.
2. The files are written into a fresh ``.tmp-ckpt-*`` directory, each flushed and ``fsync``-ed, then the
   directory itself is ``fsync``-ed.
3. The directory is renamed to ``ckpt-<n>`` (n = one more than any snapshot present) and ``root`` is ``fsync``-ed.
4. ``LATEST`` is replaced atomically (temp file, fsync, ``os.replace``, fsync of ``root``). This is the commit:
   before it, ``LATEST`` names the previous snapshot, which is untouched; after it, the new one.
5. Only then are old snapshots deleted: those a killed save renamed but never committed (numbered above what
   ``LATEST`` named when this save began), then committed ones beyond the newest ``keep``; also temp leftovers.

One writer per root: under data parallelism save from one rank only. Each file is built in memory before it is
written (RAM for one checkpoint; fine for the lab's models).

Killing the process at any moment therefore leaves ``LATEST`` naming a complete snapshot (or no ``LATEST`` at
all before the first commit). ``LATEST`` also carries the SHA-256 of the manifest, and the manifest the SHA-256
and size of each tensor file, so truncation or tampering anywhere is detected at load time.

Loading reads each file once, checks size, SHA-256 and the safetensors header (a pickle or zip file is refused by
its magic bytes) before ``safetensors`` parses it. Nothing is ever unpickled: ``torch.load`` is not used. All
problems raise :class:`CheckpointError` (a ``ValueError``) naming the file and what is wrong, and a failed load
leaves the model, optimizer and scheduler untouched.

JSON encoding: plain JSON where it suffices; values plain JSON cannot hold are tagged: ``{"__tuple__": [...]}``,
``{"__dict__": [[key, value], ...]}`` (non-string keys, e.g. the optimizer's parameter ids),
``{"__float__": "nan" | "inf" | "-inf"}`` and ``{"__tensor__": "<key in state.safetensors>"}``. Anything else
(functions, arbitrary objects, numpy scalars) is refused with a ``TypeError`` naming where it was found.

Single files (the final ``model.safetensors`` of a run): :func:`save_tensors` / :func:`load_tensors` write one
safetensors file atomically whose metadata carries a JSON document (e.g. the config) and the SHA-256 of the
tensor data, verified on load.

Bit-identical resume (RELIABILITY promise 8) holds on CPU: parameters, optimizer and scheduler state, RNG
states and the floats in JSON (written with ``repr``, which round-trips exactly) come back exactly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import sys
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from attnlab.attention import upgrade_state_dict

__all__ = [
    "CheckpointError",
    "CheckpointNotFoundError",
    "LoadedCheckpoint",
    "apply_model_state",
    "atomic_write_bytes",
    "capture_rng_state",
    "fsync_dir",
    "has_checkpoint",
    "load_checkpoint",
    "load_metadata",
    "load_tensors",
    "read_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "save_tensors",
]

FORMAT = "attnlab-checkpoint"
FORMAT_VERSION = 1
LATEST = "LATEST"
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.safetensors"
SNAPSHOT_PREFIX = "ckpt-"
TMP_PREFIX = ".tmp-ckpt-"
_SNAPSHOT_RE = re.compile(r"^ckpt-(\d{6,})$")
# Keys under which save_tensors stores its JSON document and the SHA-256 of the data section.
META_JSON_KEY = "attnlab.json"
META_SHA_KEY = "attnlab.data_sha256"

PathLike = str | os.PathLike[str]


class CheckpointError(ValueError):
    """A checkpoint or tensor file is missing, truncated, tampered with, or does not fit the model/optimizer."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """There is no committed checkpoint at the given path."""


# ----------------------------------------------------------------------------------------------------------
# Durable file primitives
# ----------------------------------------------------------------------------------------------------------


def fsync_dir(directory: Path) -> None:
    """Make a rename/creation inside ``directory`` durable. A no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    """Create ``path`` (must not exist), write ``data``, flush and fsync. Mode 0o666 minus the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically: a reader (or a crash) sees the old file or the new one, never a mix.

    Writes a temp file in the same directory, fsyncs it, ``os.replace``-s it over ``path`` and fsyncs the directory.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        _write_durable(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Safetensors bytes: build (with shared storage handled) and check before parsing
# ----------------------------------------------------------------------------------------------------------

_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip


def _to_saveable(tensors: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies where needed; tensors sharing storage (tied weights) get their own copy."""
    out: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"{what}: expected str keys, received {type(name).__name__} key {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{what}[{name!r}]: expected a torch.Tensor, received {type(tensor).__name__}")
        if tensor.layout != torch.strided:
            raise TypeError(f"{what}[{name!r}]: expected a dense (strided) tensor, received layout {tensor.layout}")
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if t.numel() > 0 and ptr in seen_storage:
            t = t.clone()
        elif t.numel() > 0:
            seen_storage.add(ptr)
        out[name] = t
    return out


def _magic_problem(data: bytes) -> str | None:
    """A hint for files that are not safetensors: torch.save's zip archive or a raw pickle stream."""
    if data[:4] == b"PK\x03\x04":
        return "it is a zip archive (the torch.save format, which holds a pickle), not safetensors; refusing to load it"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "it starts like a pickle stream, not safetensors; refusing to unpickle it"
    return None


def _check_safetensors(data: bytes, source: str) -> None:
    """Validate the safetensors framing (header length, JSON header, every tensor's extent) before parsing.

    Layout: 8-byte little-endian header length N, N bytes of JSON header starting with '{', then the data section.
    """
    if len(data) < 9:
        hint = _magic_problem(data)
        raise CheckpointError(
            f"{source}: {hint}" if hint else f"{source}: truncated: expected at least 9 bytes, found {len(data)}"
        )
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8 or data[8:9] != b"{":
        if (hint := _magic_problem(data)) is not None:
            raise CheckpointError(f"{source}: {hint}")
        if header_len > len(data) - 8:
            raise CheckpointError(
                f"{source}: truncated or not safetensors: the header claims {header_len} bytes, "
                f"only {len(data) - 8} bytes follow the length field"
            )
        raise CheckpointError(f"{source}: not a safetensors file: expected the JSON header to start with '{{'")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{source}: corrupt safetensors header (not valid JSON: {exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{source}: corrupt safetensors header: expected a JSON object, received {header!r:.80}")
    data_len = len(data) - 8 - header_len
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
            begin, end = int(begin), int(end)
            numel = math.prod(int(s) for s in shape)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{source}: corrupt safetensors header entry for {name!r}: {info!r:.120}") from None
        if not (0 <= begin <= end):
            raise CheckpointError(f"{source}: corrupt safetensors header: tensor {name!r} has offsets {begin}..{end}")
        if end > data_len:
            raise CheckpointError(
                f"{source}: truncated: tensor {name!r} needs bytes {begin}..{end} of the data section, "
                f"which has only {data_len} bytes"
            )
        if dtype in _DTYPE_BYTES and end - begin != numel * _DTYPE_BYTES[dtype]:
            raise CheckpointError(
                f"{source}: corrupt safetensors header: tensor {name!r} ({dtype}, shape {shape}) expected "
                f"{numel * _DTYPE_BYTES[dtype]} bytes, its offsets span {end - begin}"
            )
        end_max = max(end_max, end)
    if end_max != data_len:
        raise CheckpointError(
            f"{source}: corrupt safetensors file: the tensors cover {end_max} bytes of data, the file has {data_len}"
        )


def _parse_safetensors(data: bytes, source: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    _check_safetensors(data, source)
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError (not a ValueError)
        raise CheckpointError(f"{source}: not a valid safetensors file ({exc})") from None
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    return tensors, metadata


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: expected a file, found a directory") from None


# ----------------------------------------------------------------------------------------------------------
# JSON codec for nested Python state with tensors pulled out
# ----------------------------------------------------------------------------------------------------------

_TAGS = frozenset({"__tuple__", "__dict__", "__float__", "__tensor__"})


def _encode(obj: Any, where: str, key: str, tensors: dict[str, torch.Tensor] | None) -> Any:
    """Encode ``obj`` as JSON-able data; tensors go to ``tensors`` under ``key`` (None: tensors not allowed)."""
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return float(obj)
        return {"__float__": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if isinstance(obj, torch.Tensor):
        if tensors is None:
            raise TypeError(f"{where}: tensors are not allowed here, received a tensor of shape {tuple(obj.shape)}")
        if key in tensors:
            raise TypeError(f"{where}: two values map to the same tensor key {key!r}")
        tensors[key] = obj
        return {"__tensor__": key}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{where}[{i}]", f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{where}[{i}]", f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        plain = all(isinstance(k, str) for k in obj) and not (len(obj) == 1 and next(iter(obj)) in _TAGS)
        if plain:
            return {k: _encode(v, f"{where}[{k!r}]", f"{key}.{k}", tensors) for k, v in obj.items()}
        return {
            "__dict__": [
                [
                    _encode(k, f"{where} key {k!r}", f"{key}.key{i}", tensors),
                    _encode(v, f"{where}[{k!r}]", f"{key}.{k}", tensors),
                ]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    raise TypeError(
        f"{where}: cannot store a {type(obj).__module__}.{type(obj).__qualname__} in a checkpoint; expected tensors, "
        "str, int, float, bool, None, lists, tuples or dicts of those"
    )


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor], used: set[str], source: str) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, used, source) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        ((tag, value),) = obj.items()
        if tag == "__tuple__":
            return tuple(_decode(v, tensors, used, source) for v in value)
        if tag == "__dict__":
            return {_decode(k, tensors, used, source): _decode(v, tensors, used, source) for k, v in value}
        if tag == "__float__":
            return float(value)
        if tag == "__tensor__":
            if value not in tensors:
                raise CheckpointError(f"{source}: the manifest refers to tensor {value!r}, missing from {STATE_FILE}")
            used.add(value)
            return tensors[value]
    return {k: _decode(v, tensors, used, source) for k, v in obj.items()}


# ----------------------------------------------------------------------------------------------------------
# RNG
# ----------------------------------------------------------------------------------------------------------


def _numpy_rng_to_json(state: Any) -> Any:
    import numpy as np

    if isinstance(state, np.ndarray):
        return {"ndarray_dtype": str(state.dtype), "data": state.tolist()}
    if isinstance(state, np.generic):
        return state.item()
    if isinstance(state, dict):
        return {k: _numpy_rng_to_json(v) for k, v in state.items()}
    return state


def _numpy_rng_from_json(state: Any) -> Any:
    import numpy as np

    if isinstance(state, dict):
        if set(state) == {"ndarray_dtype", "data"}:
            return np.array(state["data"], dtype=state["ndarray_dtype"])
        return {k: _numpy_rng_from_json(v) for k, v in state.items()}
    return state


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states: torch CPU, CUDA (when available), Python ``random``, numpy (when imported).

    Per-object generators (a ``torch.Generator`` driving a sampler) are not global: store
    ``generator.get_state()`` in ``extra`` yourself.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    if "numpy" in sys.modules:
        state["numpy"] = _numpy_rng_to_json(sys.modules["numpy"].random.get_state(legacy=False))
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` captured, so later draws repeat exactly."""
    cpu = state.get("torch")
    if not isinstance(cpu, torch.Tensor) or cpu.dtype != torch.uint8 or cpu.dim() != 1:
        got = f"{cpu.dtype} tensor of shape {tuple(cpu.shape)}" if isinstance(cpu, torch.Tensor) else type(cpu).__name__
        raise CheckpointError(f"rng['torch']: expected a 1-D uint8 tensor, received {got}")
    torch.set_rng_state(cpu)
    if "python" in state:
        py = state["python"]
        try:
            random.setstate((py[0], tuple(py[1]), py[2]))
        except (TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"rng['python']: not a Python random state ({exc})") from None
    if "cuda" in state:
        saved = state["cuda"]
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available != len(saved):
            warnings.warn(
                f"checkpoint has CUDA RNG states for {len(saved)} device(s), this process has {available}; "
                f"restoring {min(available, len(saved))}",
                RuntimeWarning,
                stacklevel=2,
            )
        for device, cuda_state in enumerate(saved[:available]):
            torch.cuda.set_rng_state(cuda_state, device)
    if state.get("numpy") is not None:
        import numpy as np

        try:
            np.random.set_state(_numpy_rng_from_json(state["numpy"]))
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"rng['numpy']: not a numpy random state ({exc})") from None


# ----------------------------------------------------------------------------------------------------------
# Checkpoint save
# ----------------------------------------------------------------------------------------------------------


def _qualname(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _snapshots(root: Path) -> dict[int, Path]:
    found = {}
    if root.is_dir():
        for child in root.iterdir():
            if (m := _SNAPSHOT_RE.match(child.name)) and child.is_dir():
                found[int(m.group(1))] = child
    return found


def _remove_leftovers(root: Path) -> None:
    """Remove temp directories/files of saves that were killed (one writer per root, so none is in progress)."""
    for child in root.iterdir():
        if child.name.startswith(TMP_PREFIX) and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith(f".{LATEST}.tmp-") and child.is_file():
            child.unlink(missing_ok=True)


def _committed_seq(root: Path) -> int | None:
    """The snapshot number ``LATEST`` names: None without ``LATEST``, ``sys.maxsize`` if it is unreadable (then no
    snapshot counts as uncommitted, and none is deleted as one)."""
    try:
        name = json.loads((root / LATEST).read_bytes())["snapshot"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return sys.maxsize
    m = _SNAPSHOT_RE.match(name) if isinstance(name, str) else None
    return int(m.group(1)) if m else sys.maxsize


def save_checkpoint(
    path: PathLike,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    extra: Mapping[str, Any] | None = None,
    rng: bool = True,
    keep: int = 1,
) -> Path:
    """Save a checkpoint under the directory ``path`` atomically; return the new snapshot directory.

    Args:
        path: the checkpoint root (created if missing); see the module docstring for the layout.
        model_state: ``model.state_dict()`` (tied weights are fine).
        optimizer: saved with ``optimizer.state_dict()``: tensors to ``state.safetensors``, the rest to JSON.
        scheduler: an LR scheduler (anything with ``state_dict()``); its state must be JSON-able (tensors allowed).
        extra: the caller's training state (config, step, data position, loss log): JSON-able, tuples, dicts with
            int keys, non-finite floats and tensors allowed; returned by :func:`load_checkpoint`.
        rng: capture the global RNG states (:func:`capture_rng_state`).
        keep: how many committed snapshots to keep (>= 1); older ones are deleted after the commit.

    Raises:
        TypeError: a value cannot be stored (named by its place, e.g. ``scheduler.state_dict()['fn']``);
            nothing has been written then.
        ValueError: bad ``keep``, or ``path`` is a snapshot directory or a file.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep: expected an int >= 1, received {keep!r}")
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise ValueError(f"path: expected a checkpoint directory, received an existing file {root}")
    if (root / MANIFEST).exists():
        raise ValueError(f"path: {root} is a snapshot directory (has {MANIFEST}); save to its parent instead")
    if extra is not None and not isinstance(extra, Mapping):
        raise TypeError(f"extra: expected a mapping (JSON-able training state), received {type(extra).__name__}")
    if not isinstance(model_state, Mapping):
        raise TypeError(f"model_state: expected a mapping of str to Tensor, received {type(model_state).__name__}")

    # 1. Encode everything in memory; any unstorable value raises before the disk is touched.
    state_tensors: dict[str, torch.Tensor] = {}
    manifest: dict[str, Any] = {"format": FORMAT, "version": FORMAT_VERSION, "torch_version": torch.__version__}
    manifest["optimizer"] = None
    if optimizer is not None:
        manifest["optimizer"] = {
            "class": _qualname(optimizer),
            "state_dict": _encode(optimizer.state_dict(), "optimizer.state_dict()", "optimizer", state_tensors),
        }
    manifest["scheduler"] = None
    if scheduler is not None:
        if not callable(getattr(scheduler, "state_dict", None)):
            raise TypeError(f"scheduler: expected an object with state_dict(), received {type(scheduler).__name__}")
        manifest["scheduler"] = {
            "class": _qualname(scheduler),
            "state_dict": _encode(scheduler.state_dict(), "scheduler.state_dict()", "scheduler", state_tensors),
        }
    manifest["rng"] = _encode(capture_rng_state(), "rng", "rng", state_tensors) if rng else None
    manifest["extra"] = _encode(dict(extra or {}), "extra", "extra", state_tensors)
    model_bytes = safetensors.torch.save(_to_saveable(model_state, "model_state"))
    state_bytes = safetensors.torch.save(_to_saveable(state_tensors, "state"))
    manifest["files"] = {
        MODEL_FILE: {"sha256": _sha256(model_bytes), "bytes": len(model_bytes)},
        STATE_FILE: {"sha256": _sha256(state_bytes), "bytes": len(state_bytes)},
    }
    manifest_bytes = json.dumps(manifest, allow_nan=False, separators=(",", ":")).encode()

    # 2. Write the snapshot into a private temp directory.
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    if created:
        fsync_dir(root.parent)
    _remove_leftovers(root)
    committed = _committed_seq(root)
    tmp = root / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        _write_durable(tmp / MODEL_FILE, model_bytes)
        _write_durable(tmp / STATE_FILE, state_bytes)
        _write_durable(tmp / MANIFEST, manifest_bytes)
        fsync_dir(tmp)
        # 3. Give it its final name; it is complete but not yet committed.
        existing = _snapshots(root)
        seq = max(existing, default=0) + 1
        snapshot = root / f"{SNAPSHOT_PREFIX}{seq:06d}"
        os.rename(tmp, snapshot)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)
    # 4. Commit: LATEST now names the new snapshot.
    pointer = {"snapshot": snapshot.name, "manifest_sha256": _sha256(manifest_bytes)}
    atomic_write_bytes(root / LATEST, json.dumps(pointer).encode())
    # 5. Drop snapshots a killed save renamed but never committed, then committed ones beyond ``keep``.
    orphans = [n for n in existing if committed is None or n > committed]
    previous = sorted(n for n in existing if n not in orphans)
    for old_seq in orphans + previous[: max(0, len(previous) - (keep - 1))]:
        shutil.rmtree(existing[old_seq], ignore_errors=True)
    return snapshot


# ----------------------------------------------------------------------------------------------------------
# Checkpoint load
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedCheckpoint:
    """Everything read (and verified) from one snapshot; nothing applied yet."""

    path: Path
    model_state: dict[str, torch.Tensor]
    extra: dict[str, Any]
    optimizer_class: str | None = None
    optimizer_state: dict[str, Any] | None = None
    scheduler_class: str | None = None
    scheduler_state: dict[str, Any] | None = None
    rng_state: dict[str, Any] | None = field(default=None, repr=False)


def has_checkpoint(path: PathLike) -> bool:
    """Whether ``path`` holds a committed checkpoint (a root with ``LATEST`` or a snapshot with a manifest)."""
    root = Path(path)
    return (root / LATEST).is_file() or (root / MANIFEST).is_file()


def _resolve_snapshot(root: Path) -> tuple[Path, str | None]:
    """The snapshot directory to read and the manifest SHA-256 it must have (None when read directly)."""
    if (root / MANIFEST).is_file():
        return root, None
    latest = root / LATEST
    if not latest.is_file():
        if not root.exists():
            raise CheckpointNotFoundError(f"{root}: no checkpoint: the directory does not exist")
        raise CheckpointNotFoundError(
            f"{root}: no checkpoint: expected a {LATEST} pointer (a checkpoint root) or a {MANIFEST} (a snapshot), "
            "found neither"
        )
    try:
        pointer = json.loads(_read_file(latest))
        name, manifest_sha = pointer["snapshot"], pointer["manifest_sha256"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{latest}: corrupt pointer file ({type(exc).__name__}: {exc})") from None
    if not isinstance(name, str) or not _SNAPSHOT_RE.match(name):
        raise CheckpointError(f"{latest}: expected a snapshot name like 'ckpt-000001', received {name!r}")
    snapshot = root / name
    if not snapshot.is_dir():
        raise CheckpointError(f"{latest}: points to {name}, but {snapshot} does not exist")
    return snapshot, manifest_sha


def read_checkpoint(path: PathLike) -> LoadedCheckpoint:
    """Read and verify a checkpoint (a root with ``LATEST``, or one snapshot directory) without applying it.

    Raises:
        CheckpointNotFoundError: nothing committed at ``path``.
        CheckpointError: a missing, truncated, tampered or malformed file (the message names it).
    """
    snapshot, manifest_sha = _resolve_snapshot(Path(path))
    manifest_path = snapshot / MANIFEST
    manifest_bytes = _read_file(manifest_path)
    if manifest_sha is not None and _sha256(manifest_bytes) != manifest_sha:
        raise CheckpointError(
            f"{manifest_path}: SHA-256 mismatch: {LATEST} expects {manifest_sha}, the file has "
            f"{_sha256(manifest_bytes)} (truncated or modified)"
        )
    try:
        manifest = json.loads(manifest_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{manifest_path}: corrupt manifest (not valid JSON: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise CheckpointError(f"{manifest_path}: expected format {FORMAT!r}, received {got!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{manifest_path}: expected format version {FORMAT_VERSION}, received {manifest.get('version')!r}"
        )

    files = manifest.get("files")
    loaded: dict[str, dict[str, torch.Tensor]] = {}
    for name in (MODEL_FILE, STATE_FILE):
        file = snapshot / name
        expected = files.get(name) if isinstance(files, dict) else None
        if not isinstance(expected, dict) or not {"sha256", "bytes"} <= expected.keys():
            raise CheckpointError(f"{manifest_path}: no SHA-256/size entry for {name}")
        data = _read_file(file)
        if len(data) != expected["bytes"]:
            kind = "truncated" if len(data) < expected["bytes"] else "has extra bytes"
            raise CheckpointError(f"{file}: {kind}: expected {expected['bytes']} bytes, found {len(data)}")
        if (digest := _sha256(data)) != expected["sha256"]:
            raise CheckpointError(
                f"{file}: SHA-256 mismatch: expected {expected['sha256']}, found {digest} (the file was modified)"
            )
        loaded[name], _ = _parse_safetensors(data, str(file))

    state_tensors, used = loaded[STATE_FILE], set()
    source = str(manifest_path)

    def section(value: Any) -> Any:
        return _decode(value, state_tensors, used, source)

    try:
        optimizer, scheduler = manifest["optimizer"], manifest["scheduler"]
        result = LoadedCheckpoint(
            path=snapshot,
            model_state=loaded[MODEL_FILE],
            extra=section(manifest["extra"]),
            optimizer_class=optimizer["class"] if optimizer else None,
            optimizer_state=section(optimizer["state_dict"]) if optimizer else None,
            scheduler_class=scheduler["class"] if scheduler else None,
            scheduler_state=section(scheduler["state_dict"]) if scheduler else None,
            rng_state=section(manifest["rng"]),
        )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{manifest_path}: malformed manifest ({type(exc).__name__}: {exc})") from None
    if unused := sorted(state_tensors.keys() - used):
        raise CheckpointError(f"{snapshot / STATE_FILE}: tensors not referenced by the manifest: {unused[:10]}")
    return result


def _limited(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _check_model_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    shapes, dtypes = [], []
    for name in sorted(expected.keys() & tensors.keys()):
        want, got = expected[name], tensors[name]
        if want.shape != got.shape:
            shapes.append(f"{name}: model expects {tuple(want.shape)}, checkpoint has {tuple(got.shape)}")
        elif want.dtype != got.dtype:
            dtypes.append(f"{name}: model expects {want.dtype}, checkpoint has {got.dtype}")
    problems = []
    if missing:
        problems.append(f"missing keys (in the model, not in the file): {_limited(missing)}")
    if unexpected:
        problems.append(f"unexpected keys (in the file, not in the model): {_limited(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_limited(shapes)}")
    if dtypes:
        problems.append(f"dtype mismatches: {_limited(dtypes)}")
    if problems:
        raise CheckpointError(f"{source}: does not fit {type(model).__name__}: " + "; ".join(problems))


def apply_model_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], *, source: PathLike = "tensors") -> None:
    """Load ``tensors`` into ``model`` after checking keys, shapes and dtypes (all problems listed at once).

    Raises:
        CheckpointError: missing/unexpected keys or shape/dtype mismatches, naming ``source``; the model is untouched.
    """
    tensors = upgrade_state_dict(model, tensors)  # files from before the attention modules' one layout
    _check_model_state(model, tensors, str(source))
    model.load_state_dict(tensors, strict=True)


def _check_optimizer(optimizer: torch.optim.Optimizer, ckpt: LoadedCheckpoint) -> None:
    where = ckpt.path / MANIFEST
    if ckpt.optimizer_state is None:
        raise CheckpointError(f"{where}: the checkpoint has no optimizer state, but an optimizer was passed to restore")
    if ckpt.optimizer_class != _qualname(optimizer):
        raise CheckpointError(
            f"{where}: optimizer class mismatch: checkpoint has {ckpt.optimizer_class}, received {_qualname(optimizer)}"
        )
    saved = [len(g["params"]) for g in ckpt.optimizer_state["param_groups"]]
    current = [len(g["params"]) for g in optimizer.param_groups]
    if saved != current:
        raise CheckpointError(
            f"{where}: optimizer parameter groups differ: checkpoint has group sizes {saved}, received {current}"
        )


def load_checkpoint(
    path: PathLike,
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Verify a checkpoint, restore what is passed in, and return ``extra``.

    Everything is read and checked before anything is modified: a failure leaves ``model``, ``optimizer``,
    ``scheduler`` and the RNGs as they were. Restore the optimizer into a fresh optimizer built over the model's
    parameters in the same order as when saved; training then continues bit-identically on CPU.

    Raises:
        CheckpointNotFoundError: nothing committed at ``path``.
        CheckpointError: a damaged file, a model/optimizer/scheduler that does not fit, or state requested that the
            checkpoint does not hold (e.g. ``restore_rng=True`` for a checkpoint saved with ``rng=False``).
    """
    ckpt = read_checkpoint(path)
    where = ckpt.path / MANIFEST
    if model is not None:
        _check_model_state(model, ckpt.model_state, str(ckpt.path / MODEL_FILE))
    if optimizer is not None:
        _check_optimizer(optimizer, ckpt)
    if scheduler is not None:
        if ckpt.scheduler_state is None:
            raise CheckpointError(f"{where}: the checkpoint has no scheduler state, but a scheduler was passed")
        if ckpt.scheduler_class != _qualname(scheduler):
            raise CheckpointError(
                f"{where}: scheduler class mismatch: checkpoint has {ckpt.scheduler_class}, "
                f"received {_qualname(scheduler)}"
            )
    if restore_rng and ckpt.rng_state is None:
        raise CheckpointError(f"{where}: the checkpoint was saved without RNG state; pass restore_rng=False")

    if model is not None:
        model.load_state_dict(ckpt.model_state, strict=True)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt.optimizer_state)
    if scheduler is not None:
        scheduler.load_state_dict(ckpt.scheduler_state)
    if restore_rng:
        restore_rng_state(ckpt.rng_state)
    return ckpt.extra


# ----------------------------------------------------------------------------------------------------------
# Single safetensors file (the final model of a run)
# ----------------------------------------------------------------------------------------------------------


def save_tensors(
    path: PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None
) -> None:
    """Write one safetensors file atomically; ``metadata`` (plain JSON, e.g. the config) rides in its header.

    The header also records the SHA-256 of the tensor data, which :func:`load_tensors` verifies.

    Raises:
        TypeError: a key is not a str, a value not a dense tensor, or ``metadata`` is not plain JSON.
    """
    try:
        meta_json = json.dumps(dict(metadata or {}), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"metadata: expected plain JSON (str keys, finite floats), received a value that is not: {exc}"
        ) from None
    tensors = _to_saveable(tensors, "tensors")
    data = safetensors.torch.save(tensors)
    data_sha = _sha256(memoryview(data)[8 + int.from_bytes(data[:8], "little") :])
    data = safetensors.torch.save(tensors, {META_JSON_KEY: meta_json, META_SHA_KEY: data_sha, "format": "pt"})
    atomic_write_bytes(path, data)


def load_metadata(path: PathLike) -> dict[str, Any]:
    """The JSON document :func:`save_tensors` stored in ``path``, read from the header alone: no tensor data is
    read, so nothing is verified against the SHA-256 (use :func:`load_tensors` before trusting the weights).

    Raises:
        CheckpointError: missing, not a safetensors file, or corrupt metadata JSON.
    """
    path = Path(path)
    try:
        with safetensors.safe_open(path, "pt") as handle:
            raw = handle.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing file") from None
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if META_JSON_KEY not in raw:
        return dict(raw)
    try:
        return json.loads(raw[META_JSON_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt {META_JSON_KEY} metadata (not valid JSON: {exc})") from None


def load_tensors(path: PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file written by :func:`save_tensors` (or any safetensors writer), never unpickling.

    Returns:
        ``(tensors, metadata)``: the JSON document given to :func:`save_tensors`, or, for a file from another
        writer, its raw string metadata.

    Raises:
        CheckpointError: missing, truncated, tampered (data SHA-256 mismatch) or not a safetensors file.
    """
    path = Path(path)
    data = _read_file(path)
    tensors, raw = _parse_safetensors(data, str(path))
    if META_SHA_KEY in raw:
        digest = _sha256(memoryview(data)[8 + int.from_bytes(data[:8], "little") :])
        if digest != raw[META_SHA_KEY]:
            raise CheckpointError(
                f"{path}: SHA-256 mismatch of the tensor data: expected {raw[META_SHA_KEY]}, found {digest} "
                "(the file was modified)"
            )
    if META_JSON_KEY not in raw:
        return tensors, dict(raw)
    try:
        return tensors, json.loads(raw[META_JSON_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: corrupt {META_JSON_KEY} metadata (not valid JSON: {exc})") from None
