"""Vision benchmark: attnlab's ``nonlocal`` block against timm's ``NonLocalAttn``, the same math, weights copied.

Embedded-Gaussian non-local block (Wang et al. 2018) as timm writes it, 64 channels, batch 2, forward+backward,
at 32x32, 64x64, 96x96 and 128x128 (N = 1,024 .. 16,384 pixels):

    z = BN(W_z softmax(s * theta(x) phi(x)^T) g(x)) + x,   theta, phi, g: 1x1 convs 64 -> 8,  s = 64 ** -0.5

- ``timm``: ``timm.layers.NonLocalAttn(64)`` (``rd_ratio=1/8`` gives 8 reduced channels, ``use_scale`` gives
  ``s = in_channels ** -0.5``). It forms the ``[B, N, N]`` logits with ``bmm``, scales them (a second copy),
  softmaxes them (a third, saved for backward) and multiplies by ``g``.
- ``attnlab``: ``get_block("nonlocal", 64, reduction=8, scale=64 ** -0.5)`` with timm's weights copied
  (``t, p, g, z, norm`` -> ``pairwise.theta, pairwise.phi, g, out, norm``). It scales the queries instead of the
  logits (``(s q) . k`` vs ``s (q . k)``: equal in exact arithmetic, rounding differs) and runs the softmax through
  the fused SDPA path, so no ``[N, N]`` tensor exists in forward or backward.

Before timing, the two are checked to agree on a small input (float64, train and eval mode, random weights and
BatchNorm statistics; the script stops if they differ), and each case's float32 outputs are compared
(``max |diff|`` column).

timm is loaded from its files without running ``timm/__init__.py`` (which imports torchvision, absent here):
``timm/layers/non_local_attn.py`` and the helpers it imports (``_fx``, ``helpers``, ``trace_utils``) are imported
under a private package name whose ``__path__`` points at timm's folders; ``conv_bn_act`` (used only by
``BatNonLocalAttn``, whose import chain needs torchvision) is a stub. ``pip install --no-deps timm`` suffices.

timm's memory grows as ``N^2``: at 128x128 one ``[2, N, N]`` float32 tensor is 2 GiB and a forward+backward holds
about three. Before running timm on a case the script estimates that (``TIMM_COPIES`` copies) and, if it exceeds
``--timm-limit-gib`` (default: 80% of MemAvailable), records the case as refused instead of exhausting RAM; an
out-of-memory kill of the measuring subprocess is recorded as OOM.

Usage: ``python -m benchmarks.bench_vision [--rounds N] [--sizes 32 64 96 128] [--device cpu|cuda]
[--json FILE] [--timm-limit-gib G]``. Prints one markdown table per size (baseline: timm) and the acceptance
check at 96x96 (attnlab >= 3x faster and <= 1/20 of timm's peak extra memory) and 128x128 (attnlab runs).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import subprocess
import sys
import types
from collections.abc import Callable

import torch
from torch import nn

from benchmarks.common import (
    device_description,
    interleaved_medians,
    markdown_table,
    measure_in_subprocess,
    peak_extra_bytes,
    pin_malloc,
)

CHANNELS, BATCH = 64, 2
SIZES = (32, 64, 96, 128)
IMPLS = ["attnlab", "timm"]
BASELINE = "timm"
TIMM_COPIES = 3  # [B, N, N] float32 tensors alive at timm's peak (logits, scaled, softmax / their gradients)
_TIMM_ALIAS = "_attnlab_bench_timm"  # private package name for timm's folders (the real "timm" stays unimported)


# -- timm without timm/__init__.py -------------------------------------------------------------------------------
def load_timm_nonlocal() -> type[nn.Module]:
    """``timm.layers.non_local_attn.NonLocalAttn``, imported by file path (``timm/__init__.py`` never runs)."""
    name = f"{_TIMM_ALIAS}.layers.non_local_attn"
    if name in sys.modules:
        return sys.modules[name].NonLocalAttn
    spec = importlib.util.find_spec("timm")  # a top-level find_spec locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("timm is not installed; run `pip install --no-deps timm`")
    root = spec.submodule_search_locations[0]
    for package, path in ((_TIMM_ALIAS, root), (f"{_TIMM_ALIAS}.layers", f"{root}/layers")):
        stub = types.ModuleType(package)
        stub.__path__ = [path]  # submodules are found in timm's folders; the package's __init__ is not run
        sys.modules[package] = stub
    conv_bn_act = types.ModuleType(f"{_TIMM_ALIAS}.layers.conv_bn_act")

    class ConvNormAct(nn.Module):  # BatNonLocalAttn's layer; its real import chain needs torchvision
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise NotImplementedError("stub: ConvNormAct is not loaded by this benchmark")

    conv_bn_act.ConvNormAct = ConvNormAct
    sys.modules[conv_bn_act.__name__] = conv_bn_act
    return importlib.import_module(name).NonLocalAttn


def timm_version() -> str:
    spec = importlib.util.find_spec("timm")
    text = open(f"{spec.submodule_search_locations[0]}/version.py").read()  # noqa: SIM115
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    return match.group(1) if match else "?"


# -- the pair ----------------------------------------------------------------------------------------------------
def build_pair(channels: int = CHANNELS, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """``(attnlab block, timm block)`` holding the same random weights and BatchNorm statistics."""
    from attnlab.vision import get_block

    torch.manual_seed(seed)
    theirs = load_timm_nonlocal()(channels)
    with torch.no_grad():  # random everything: timm zero-initializes the BN scale, which would hide the attention
        for tensor in (*theirs.parameters(), theirs.norm.running_mean):
            tensor.normal_(0.0, 0.5)
        theirs.norm.running_var.uniform_(0.5, 2.0)
    reduction = channels // theirs.t.out_channels
    if channels % theirs.t.out_channels:
        raise ValueError(f"timm's rd_channels={theirs.t.out_channels} does not divide channels={channels}")
    ours = get_block("nonlocal", channels, reduction=reduction, scale=float(theirs.scale))
    mapping = {"pairwise.theta": "t", "pairwise.phi": "p", "g": "g", "out": "z", "norm": "norm"}
    state = {}
    for own, their in mapping.items():
        for key, value in theirs.get_submodule(their).state_dict().items():
            state[f"{own}.{key}"] = value
    ours.load_state_dict(state)  # strict: every tensor of ours comes from timm
    return ours, theirs


def check_agreement(channels: int = CHANNELS) -> float:
    """Largest |attnlab - timm| over outputs and input gradients on ``[2, C, 9, 11]`` in float64, train and eval;
    raises ``AssertionError`` above 1e-10."""
    ours, theirs = build_pair(channels)
    ours, theirs = ours.double(), theirs.double()
    worst = 0.0
    for train in (True, False):
        ours.train(train)
        theirs.train(train)
        x = torch.randn(2, channels, 9, 11, dtype=torch.float64, requires_grad=True)
        grads, outs = [], []
        for block in (ours, theirs):
            x.grad = None
            out = block(x)
            (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
            outs.append(out.detach())
            grads.append(x.grad.clone())
        diff = max(float((outs[0] - outs[1]).abs().max()), float((grads[0] - grads[1]).abs().max()))
        assert diff < 1e-10, f"attnlab and timm disagree by {diff:.3g} ({'train' if train else 'eval'} mode)"
        worst = max(worst, diff)
    return worst


# -- cases -------------------------------------------------------------------------------------------------------
def case_name(size: int) -> str:
    return f"nonlocal-{size}x{size}"


def _size_of(name: str) -> int:
    match = re.fullmatch(r"nonlocal-(\d+)x\1", name)
    if not match:
        raise ValueError(f"case must look like nonlocal-96x96; received {name!r}")
    return int(match.group(1))


def timm_bytes(size: int) -> int:
    """Estimated peak extra bytes of timm's forward+backward: ``TIMM_COPIES`` float32 ``[B, N, N]`` tensors."""
    pixels = size * size
    return TIMM_COPIES * BATCH * pixels * pixels * 4


def available_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        return int(re.search(r"MemAvailable:\s+(\d+)", meminfo.read()).group(1)) * 1024


def _runs(size: int, device: str, impls: list[str]) -> tuple[dict[str, Callable[[], None]], float | None]:
    ours, theirs = build_pair()
    ours, theirs = ours.to(device), theirs.to(device)
    blocks = {"attnlab": ours, "timm": theirs}
    x = torch.randn(BATCH, CHANNELS, size, size, device=device, requires_grad=True)
    agreement = None
    if len(impls) == 2:
        with torch.no_grad():
            agreement = float((ours(x) - theirs(x)).abs().max())
    return {name: _fwd_bwd(blocks[name], x) for name in impls}, agreement


def _fwd_bwd(block: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    leaves = [x, *block.parameters()]

    def run() -> None:
        for leaf in leaves:
            leaf.grad = None
        block(x).sum().backward()

    return run


def _peak(case: str, impl: str, device: str) -> int | str:
    try:
        return measure_in_subprocess("benchmarks.bench_vision", case, impl, device)
    except subprocess.CalledProcessError as error:
        killed = error.returncode in (-9, 137)
        out_of_memory = "out of memory" in (error.stderr or "").lower() or "MemoryError" in (error.stderr or "")
        if killed or out_of_memory:
            return "OOM"
        raise


def run_case(size: int, device: str, rounds: int, timm_limit: int) -> list[dict]:
    case = case_name(size)
    impls = list(IMPLS)
    refused = ""
    if device == "cpu" and timm_bytes(size) > timm_limit:
        impls.remove("timm")
        refused = f"refused: needs ~{timm_bytes(size) / 2**30:.2f} GiB > limit {timm_limit / 2**30:.2f} GiB"
    runs, agreement = _runs(size, device, impls)
    medians = interleaved_medians(runs, device, rounds)
    del runs
    peaks = {name: _peak(case, name, device) for name in impls}
    base_time = medians.get(BASELINE)
    base_peak = peaks.get(BASELINE)
    rows = []
    for name in IMPLS:
        if name not in impls:
            rows.append(
                dict(
                    case=case,
                    impl=name,
                    median_ms=refused,
                    time_ratio="",
                    peak_extra_mib=refused,
                    memory_ratio="",
                    max_abs_diff="",
                )
            )
            continue
        peak = peaks[name]
        numeric = isinstance(peak, int) and isinstance(base_peak, int)
        rows.append(
            {
                "case": case,
                "impl": name,
                "median_ms": round(medians[name] * 1e3, 2),
                "time_ratio": round(medians[name] / base_time, 3) if base_time else "",
                "peak_extra_mib": round(peak / 2**20, 1) if isinstance(peak, int) else peak,
                "memory_ratio": round(peak / max(base_peak, 1), 4) if numeric else "",
                "max_abs_diff": "" if agreement is None or name == BASELINE else f"{agreement:.2g}",
            }
        )
    return rows


def acceptance(rows: list[dict]) -> list[str]:
    """The issue's acceptance lines, from this run's rows."""
    by = {(row["case"], row["impl"]): row for row in rows}
    lines = []
    ours, theirs = by.get((case_name(96), "attnlab")), by.get((case_name(96), "timm"))
    if ours and theirs and isinstance(ours["time_ratio"], float):
        speedup = 1 / ours["time_ratio"]
        memory = ours["memory_ratio"]
        fraction = f"1/{1 / memory:.0f}" if isinstance(memory, float) and memory > 0 else str(memory)
        verdict = speedup >= 3 and isinstance(memory, float) and memory <= 1 / 20
        lines.append(
            f"96x96: attnlab {speedup:.1f}x faster than timm, {fraction} of its peak extra memory "
            f"(need >= 3x and <= 1/20): {'PASS' if verdict else 'FAIL'}"
        )
    ours = by.get((case_name(128), "attnlab"))
    if ours:
        ran = isinstance(ours["median_ms"], float)
        lines.append(
            f"128x128: attnlab runs ({ours['median_ms']} ms, {ours['peak_extra_mib']} MiB peak extra): "
            f"{'PASS' if ran else 'FAIL'}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument(
        "--timm-limit-gib",
        type=float,
        default=None,
        help="refuse timm on a case whose estimated peak exceeds this (default: 80%% of MemAvailable)",
    )
    parser.add_argument("--peak", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.peak:  # child process: one peak-memory measurement
        pin_malloc()
        case, impl = args.peak
        runs, _ = _runs(_size_of(case), args.device, [impl])
        print(json.dumps({"peak_extra_bytes": peak_extra_bytes(runs[impl], args.device)}))
        return 0

    limit = int(args.timm_limit_gib * 2**30) if args.timm_limit_gib is not None else int(0.8 * available_bytes())
    worst = check_agreement()
    print(f"device: {device_description(args.device)}, timm {timm_version()}")
    print(
        f"agreement check (float64, [2, {CHANNELS}, 9, 11], train+eval, outputs and input gradients): "
        f"max |attnlab - timm| = {worst:.2g}"
    )
    rows = []
    for size in args.sizes:
        case_rows = run_case(size, args.device, args.rounds, limit)
        rows.extend(case_rows)
        print(f"\n### {case_name(size)} (B={BATCH}, C={CHANNELS}, N={size * size})\n")
        columns = [
            ("impl", "implementation"),
            ("median_ms", "median ms"),
            ("time_ratio", "time / timm"),
            ("peak_extra_mib", "peak extra MiB"),
            ("memory_ratio", "memory / timm"),
            ("max_abs_diff", "max |diff| vs timm"),
        ]
        print(markdown_table(case_rows, columns), flush=True)
    lines = acceptance(rows)
    if lines:
        print("\n" + "\n".join(lines))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": device_description(args.device), "timm": timm_version(), "rows": rows}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
