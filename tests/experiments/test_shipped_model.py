"""The G2P model that ships inside the package: present, small, loadable offline, and used by default."""

from __future__ import annotations

import json

import torch

from attnlab.cli import main
from attnlab.experiments import SHIPPED_G2P_MODEL, evaluate_model, load_model
from attnlab.train.checkpoint import load_tensors

torch.set_num_threads(1)


def test_the_shipped_model_is_a_small_float16_file_that_says_where_it_came_from():
    assert SHIPPED_G2P_MODEL.is_file(), "the package must ship src/attnlab/assets/g2p/model.safetensors"
    assert SHIPPED_G2P_MODEL.stat().st_size < 24 * 2**20
    tensors, meta = load_tensors(SHIPPED_G2P_MODEL)
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    assert meta["storage_dtype"] == "float16" and meta["task"]["name"] == "g2p"
    assert meta["experiment"].startswith(("g2p-", "ensemble(g2p-"))
    assert all(source["step"] for source in meta["export"]["sources"])
    loaded = load_model(SHIPPED_G2P_MODEL)
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_eval_and_explain_use_the_shipped_model_by_default(capsys):
    assert main(["eval", "g2p", "--limit", "40", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["model"] == str(SHIPPED_G2P_MODEL) and scores["words"] == 40
    assert main(["explain", "attention", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("attention: ") and "which letters each phoneme attended to" in out


def test_the_shipped_model_transcribes_unseen_words():
    # 400 test words, evenly spaced: a damaged or wrong file scores far worse (an untrained model: 100%)
    scores = evaluate_model("g2p", None, split="test", limit=400)
    assert scores["wer_no_stress"] < 40.0 and scores["per_no_stress"] < 12.0
