"""Attention benchmarks: attnlab against the implementations a user would pick instead.

Self-attention, forward+backward, (B, T, D, H) = (8, 512, 256, 8) and (4, 2048, 256, 8):
  attnlab ``SelfAttention`` (weights off / on) vs the same projections around raw
  ``torch.nn.functional.scaled_dot_product_attention`` vs ``torch.nn.MultiheadAttention`` (need_weights off / on).
  All five hold the same weights (copied from the MultiheadAttention) and their outputs are checked to agree.
Additive attention, forward+backward, B=4, Tq=Tk=1024, D=A=128:
  attnlab ``attend`` with the additive score (chunked, recomputing backward) vs a naive broadcast implementation of
  the same math vs Keras 3 ``AdditiveAttention`` (torch backend; its score is v^T tanh(q + k), no W and U).

Usage: ``python -m benchmarks.bench_attention [--suite self|additive|all] [--rounds N] [--device cpu|cuda]
[--json FILE]``. Prints one markdown table per case: median time and peak extra memory, with ratios to the
baseline (raw SDPA for self-attention, the naive implementation for additive).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import (
    device_description,
    interleaved_medians,
    markdown_table,
    measure_in_subprocess,
    peak_extra_bytes,
    pin_malloc,
)

CASES = {
    "self-B8-T512": dict(kind="self", batch=8, length=512, dim=256, heads=8),
    "self-B4-T2048": dict(kind="self", batch=4, length=2048, dim=256, heads=8),
    "additive-B4-T1024": dict(kind="additive", batch=4, length=1024, dim=128),
}
SELF_IMPLS = ["attnlab", "raw_sdpa", "torch_mha", "attnlab+weights", "torch_mha+weights"]
ADDITIVE_IMPLS = ["attnlab", "naive", "keras"]
BASELINE = {"self": "raw_sdpa", "additive": "naive"}


class RawSDPA(nn.Module):
    """The hand-written alternative: fused qkv projection, raw SDPA, output projection."""

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        dim = mha.embed_dim
        self.heads = mha.num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        with torch.no_grad():
            self.qkv.weight.copy_(mha.in_proj_weight)
            self.qkv.bias.copy_(mha.in_proj_bias)
            self.out.weight.copy_(mha.out_proj.weight)
            self.out.bias.copy_(mha.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = (
            t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)  # (B, H, T, Dh)
            for t in self.qkv(x).split(dim, dim=-1)
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, Dh)
        return self.out(out.transpose(1, 2).reshape(batch, length, dim))


def _self_runs(case: dict, device: str, impls: list[str]) -> tuple[dict[str, Callable[[], None]], dict[str, float]]:
    import attnlab

    torch.manual_seed(0)
    mha = nn.MultiheadAttention(case["dim"], case["heads"], batch_first=True).to(device)
    x = torch.randn(case["batch"], case["length"], case["dim"], device=device, requires_grad=True)
    ours = attnlab.SelfAttention.from_torch(mha)
    raw = RawSDPA(mha).to(device)
    forwards = {
        "attnlab": lambda: ours(x),
        "attnlab+weights": lambda: ours(x, return_weights=True).context,
        "raw_sdpa": lambda: raw(x),
        "torch_mha": lambda: mha(x, x, x, need_weights=False)[0],
        "torch_mha+weights": lambda: mha(x, x, x, need_weights=True)[0],
    }
    modules = {"attnlab": ours, "attnlab+weights": ours, "raw_sdpa": raw, "torch_mha": mha, "torch_mha+weights": mha}
    with torch.no_grad():
        reference = forwards["torch_mha"]()
        agreement = {name: float((forwards[name]() - reference).abs().max()) for name in impls}
    return {name: _fwd_bwd(forwards[name], [x, *modules[name].parameters()]) for name in impls}, agreement


def _naive_additive(q, k, v, w, u, score_v):
    hidden = torch.tanh((q @ w).unsqueeze(2) + (k @ u).unsqueeze(1))  # (B, Tq, Tk, A)
    weights = (hidden @ score_v).softmax(-1)  # (B, Tq, Tk)
    return weights @ v  # (B, Tq, D)


def _additive_runs(case: dict, device: str, impls: list[str]) -> tuple[dict[str, Callable[[], None]], dict[str, float]]:
    import attnlab

    torch.manual_seed(0)
    batch, length, dim = case["batch"], case["length"], case["dim"]
    q, k, v = (torch.randn(batch, length, dim, device=device, requires_grad=True) for _ in range(3))
    score = attnlab.get_score("additive", query_dim=dim, key_dim=dim, hidden_dim=dim).to(device)
    w, u, score_v = (p[0].detach().clone().requires_grad_() for p in (score.query_weight, score.key_weight, score.v))
    forwards: dict[str, Callable[[], torch.Tensor]] = {
        "attnlab": lambda: attnlab.attend(q, k, v, score).context,
        "naive": lambda: _naive_additive(q, k, v, w, u, score_v),
    }
    params = {"attnlab": list(score.parameters()), "naive": [w, u, score_v]}
    if "keras" in impls:
        os.environ.setdefault("KERAS_BACKEND", "torch")
        import keras

        layer = keras.layers.AdditiveAttention(use_scale=True)
        forwards["keras"] = lambda: layer([q, v, k])
        params["keras"] = []
    agreement = {}
    with torch.no_grad():
        reference = forwards["naive"]()
        agreement["attnlab"] = float((forwards["attnlab"]() - reference).abs().max())
    return {name: _fwd_bwd(forwards[name], [q, k, v, *params[name]]) for name in impls}, agreement


def _fwd_bwd(forward: Callable[[], torch.Tensor], leaves: list[torch.Tensor]) -> Callable[[], None]:
    def run() -> None:
        for leaf in leaves:
            leaf.grad = None
        forward().sum().backward()

    return run


def _runs(case_name: str, device: str, impls: list[str]):
    case = CASES[case_name]
    builder = _self_runs if case["kind"] == "self" else _additive_runs
    return builder(case, device, impls)


def run_case(case_name: str, device: str, rounds: int, impls: list[str]) -> list[dict]:
    case = CASES[case_name]
    runs, agreement = _runs(case_name, device, impls)
    medians = interleaved_medians(runs, device, rounds)
    del runs
    peaks = {name: measure_in_subprocess("benchmarks.bench_attention", case_name, name, device) for name in impls}
    baseline = BASELINE[case["kind"]]
    rows = []
    for name in impls:
        rows.append(
            {
                "case": case_name,
                "impl": name,
                "median_ms": round(medians[name] * 1e3, 2),
                "time_ratio": round(medians[name] / medians[baseline], 3),
                "peak_extra_mib": round(peaks[name] / 2**20, 1),
                "memory_ratio": round(peaks[name] / max(peaks[baseline], 1), 3),
                "max_abs_diff": agreement.get(name, ""),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=["self", "additive", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras peer (if keras is not installed)")
    parser.add_argument("--peak", nargs=2, metavar=("CASE", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.peak:  # child process: one peak-memory measurement
        pin_malloc()
        case_name, impl = args.peak
        runs, _ = _runs(case_name, args.device, [impl])
        print(json.dumps({"peak_extra_bytes": peak_extra_bytes(runs[impl], args.device)}))
        return 0

    print(f"device: {device_description(args.device)}")
    rows = []
    for case_name, case in CASES.items():
        if args.suite not in ("all", case["kind"]):
            continue
        impls = (
            SELF_IMPLS
            if case["kind"] == "self"
            else [i for i in ADDITIVE_IMPLS if not (args.no_keras and i == "keras")]
        )
        case_rows = run_case(case_name, args.device, args.rounds, impls)
        rows.extend(case_rows)
        print(f"\n### {case_name}\n")
        columns = [
            ("impl", "implementation"),
            ("median_ms", "median ms"),
            ("time_ratio", "time / baseline"),
            ("peak_extra_mib", "peak extra MiB"),
            ("memory_ratio", "memory / baseline"),
            ("max_abs_diff", "max |diff| vs peer"),
        ]
        print(markdown_table(case_rows, columns), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": device_description(args.device), "rows": rows}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
