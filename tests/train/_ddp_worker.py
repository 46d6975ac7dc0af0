"""Test helper for test_distributed.py: a few float64 training steps of a tiny Transformer, run either as one
process (``python _ddp_worker.py OUT``) or under ``torchrun --nproc_per_node N _ddp_worker.py OUT``.

The global batch is 13 sequences (uneven shards: 7 + 6 on two ranks) over 27 training sequences, so each epoch
also has a 1-sequence batch that only rank 0 gets a share of. Each rank writes ``OUT/rank{r}.json`` with the
sizes of the shards it trained on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from attnlab.data import as_symbols, collate_seq2seq, make_sequence_task, task_vocab  # noqa: E402
from attnlab.seq import Transformer, TransformerConfig  # noqa: E402
from attnlab.train.distributed import init_from_env, shutdown  # noqa: E402
from attnlab.train.rundir import prepare_run_dir  # noqa: E402
from attnlab.train.trainer import TrainConfig, TrainData, Trainer  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    ctx = init_from_env("cpu")
    if ctx.is_main:
        prepare_run_dir(out)
    ctx.barrier()
    vocab = task_vocab(7)
    pairs = as_symbols(make_sequence_task("reverse", 27, 1, 9, 7, seed=3))
    shards: list[int] = []

    def collate(examples):
        shards.append(len(examples))
        return collate_seq2seq(examples, vocab, vocab)

    data = TrainData(pairs, [2 * len(s) + 1 for s, _ in pairs], collate)
    torch.manual_seed(0)
    config = TransformerConfig(src_vocab=len(vocab), tgt_vocab=len(vocab), dim=16, heads=2, ffn_dim=32,
                               encoder_layers=1, decoder_layers=1, dropout=0.0)  # fmt: skip
    model = Transformer(config).double()
    train = TrainConfig(max_steps=6, batch_size=13, lr=1e-2, warmup_steps=2, weight_decay=0.1, clip_norm=0.5,
                        checkpoint_every=3, eval_every=100)  # fmt: skip
    Trainer(model, train, data, out, dist=ctx, progress=False, verbose=False).fit()
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(shards))
    shutdown(ctx)


if __name__ == "__main__":
    main()
