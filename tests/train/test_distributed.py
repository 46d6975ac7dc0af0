"""Data parallelism (issue 3 acceptance): ``torchrun --nproc_per_node 2`` (gloo, CPU) takes the same updates as
one process at the same global batch, in float64 up to the order of additions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlab.data import shard
from attnlab.seq import Transformer, TransformerConfig
from attnlab.train.checkpoint import load_tensors
from attnlab.train.distributed import SINGLE, DistContext, local_share, sync_gradients

WORKER = Path(__file__).with_name("_ddp_worker.py")


def _run(command: list[str], out: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*command, str(WORKER), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_two_processes_match_one_process_at_the_same_global_batch(tmp_path):
    single, double = tmp_path / "one", tmp_path / "two"
    _run([sys.executable], single)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"], double)

    one, _ = load_tensors(single / "model.safetensors")
    two, _ = load_tensors(double / "model.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        assert one[name].dtype == torch.float64
        torch.testing.assert_close(two[name], one[name], rtol=1e-10, atol=1e-12, msg=name)
    log_one = [json.loads(line) for line in (single / "train.jsonl").read_text().splitlines()]
    log_two = [json.loads(line) for line in (double / "train.jsonl").read_text().splitlines()]
    assert [r["tokens"] for r in log_one] == [r["tokens"] for r in log_two]
    for a, b in zip(log_one, log_two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-10)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-9)
    # not vacuous: the weights moved away from their (seed 0) initialisation
    torch.manual_seed(0)
    initial = Transformer(TransformerConfig(src_vocab=12, tgt_vocab=12, dim=16, heads=2, ffn_dim=32, encoder_layers=1,
                                            decoder_layers=1, dropout=0.0)).double().state_dict()  # fmt: skip
    assert initial.keys() == one.keys() and not torch.equal(initial["out.weight"], one["out.weight"])
    # each rank trained on its own slice of every global batch (7 + 6 of 13; the 1-sequence batch on rank 0 only)
    sizes = json.loads((single / "rank0.json").read_text())
    assert sorted(set(sizes)) == [1, 13] and len(sizes) == 6
    assert json.loads((double / "rank0.json").read_text()) == [(n + 1) // 2 for n in sizes]
    assert json.loads((double / "rank1.json").read_text()) == [n // 2 for n in sizes if n > 1]


def test_local_share_covers_small_batches():
    two = [DistContext(rank=r, world=2) for r in (0, 1)]
    assert [local_share([4, 5, 6], c) for c in two] == [shard([4, 5, 6], 0, 2), shard([4, 5, 6], 1, 2)]
    assert [local_share([9], c) for c in two] == [[9], []]
    assert local_share([1, 2], SINGLE) == [1, 2]


def test_sync_gradients_divides_by_tokens_and_fills_missing_grads():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    a.grad = torch.tensor([2.0, 4.0, 6.0])
    sync_gradients([a, b], 2.0, SINGLE)
    assert torch.equal(a.grad, torch.tensor([1.0, 2.0, 3.0])) and torch.equal(b.grad, torch.zeros(2))
    with pytest.raises(ValueError, match="total_tokens"):
        sync_gradients([a], 0, SINGLE)
