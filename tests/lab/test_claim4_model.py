"""Claim 4 reads encoder self-attention, so it uses the shipped G2P model only when that is (or holds) a Transformer."""

from __future__ import annotations

import pytest
import torch

from attnlab.experiments import G2PTask, get_experiment, model_spec
from attnlab.lab.claims import text
from attnlab.seq import Ensemble, Transformer
from attnlab.train.checkpoint import save_tensors


def _smoke(name: str, task: G2PTask):
    torch.manual_seed(0)
    experiment = get_experiment(name)
    return experiment.make_model(task, **experiment.budget("smoke").model)


@pytest.mark.parametrize("shipped", [None, "g2p-bahdanau", "g2p-transformer", "ensemble"])
def test_claim_4_picks_the_shipped_transformer_or_trains_one(shipped, tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    monkeypatch.setattr(text, "SHIPPED_G2P_MODEL", path)
    task = G2PTask(**get_experiment("g2p-transformer").budget("smoke").data)
    if shipped is not None:
        if shipped == "ensemble":
            model = Ensemble([_smoke("g2p-bahdanau", task), _smoke("g2p-transformer", task)])
        else:
            model = _smoke(shipped, task)
        meta = {"format": "attnlab-model", "version": 1, "model": model_spec(model), "task": task.spec(),
                "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
        save_tensors(path, model.state_dict(), meta)
    found = text._shipped_transformer()
    trainings = text._g2p_trainings(type("FakeTour", (), {"budget": "quick"})())
    if shipped in (None, "g2p-bahdanau"):
        assert found is None and trainings == [("g2p-transformer", text.QUICK_STEPS)]
        return
    assert trainings == []
    loaded, which = found
    assert isinstance(loaded.model, Transformer) and not loaded.model.training
    assert which == ("the shipped G2P model" if shipped == "g2p-transformer" else
                     "the Transformer of the shipped G2P ensemble")  # fmt: skip
    expected = model.state_dict()
    prefix = "members.1." if shipped == "ensemble" else ""
    assert all(torch.equal(v, expected[prefix + k]) for k, v in loaded.model.state_dict().items())
    assert loaded.metadata["model"] == model_spec(loaded.model)  # the metadata describes the model it came with
    assert loaded.metadata["parameters"] == sum(p.numel() for p in loaded.model.parameters())
