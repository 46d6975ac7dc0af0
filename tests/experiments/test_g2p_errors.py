"""Where a G2P model's word errors lie (``attnlab.experiments.g2p_errors``): hand-made cases, and a model file."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.experiments import G2PTask, export_model, get_experiment, model_spec
from attnlab.experiments.g2p_errors import error_profile, main, model_profiles, own_errors, table
from attnlab.train.checkpoint import save_tensors

torch.set_num_threads(1)

CAT = [("K", "AE1", "T")]


def test_each_error_is_sorted_by_where_it_differs_from_its_closest_reference():
    hyps = [
        ("K", "AE0", "T"),  # right without stress
        ("K", "AE1", "T", "S"),  # one phoneme too many at the end: wrong length, last only
        ("K", "AE1", "D"),  # last phoneme wrong: last only
        ("G", "AE1", "T"),  # first phoneme wrong: first only
        ("K", "IH1", "T", "S", "T"),  # differs in the middle and at the end: wrong length only
        ("S", "T", "R", "EH1", "NG", "K", "TH", "S"),  # one too many at the start of the closer (second) reference
        ("EH1",),  # a one-phoneme word: its only phoneme is both its first and its last
    ]
    strengths = [("T", "R", "EH1", "NG", "K", "TH"), ("T", "R", "EH1", "NG", "K", "TH", "S")]
    refs = [CAT, CAT, CAT, CAT, CAT, strengths, [("AH0",)]]
    profile = error_profile(hyps, refs)
    assert profile["words"] == 7 and profile["errors"] == 6 and profile["wer"] == pytest.approx(600 / 7)
    assert (profile["wrong_length"], profile["too_short"], profile["too_long"]) == (3, 0, 3)
    assert profile["last_only"] == 3 and profile["first_only"] == 3
    assert profile["last_only_share"] == pytest.approx(50.0) and profile["wrong_length_share"] == pytest.approx(50.0)
    assert profile["edge"] == 2
    narrow = error_profile(hyps[:5], refs[:5], edge=1)  # K AE1 T S, K AE1 D against K AE1 T: still the last one
    assert narrow["last_only"] == 2 and narrow["first_only"] == 1
    middle = [error_profile(hyps[4:5], refs[4:5], edge=e) for e in (3, 4)]  # K IH1 T S T: K and T agree
    assert [(p["last_only"], p["first_only"]) for p in middle] == [(0, 0), (1, 1)]  # within 4 of 5 at either end
    stressed = error_profile(hyps[:1], refs[:1], stress=True)  # AE0 against AE1 counts with stress
    assert stressed["errors"] == 1 and stressed["wrong_length"] == 0 and stressed["last_only"] == 1


def test_no_errors_gives_no_shares_and_bad_input_is_refused():
    profile = error_profile([("K", "AE1", "T")], [CAT])
    assert profile["errors"] == 0 and profile["wer"] == 0.0 and profile["last_only_share"] is None
    with pytest.raises(ValueError, match="refs: expected 2 items"):
        error_profile([("K",), ("T",)], [CAT])
    with pytest.raises(ValueError, match="hyps: expected at least one item"):
        error_profile([], [])
    with pytest.raises(ValueError, match=r"refs\[0\]: expected at least one reference"):
        error_profile([("K",)], [[]])
    with pytest.raises(ValueError, match="edge: expected an int >= 1"):
        error_profile([("K",)], [CAT], edge=0)
    with pytest.raises(TypeError, match="edge: expected an int"):
        error_profile([("K",)], [CAT], edge=1.5)


def test_own_errors_are_those_on_words_the_other_models_get_right():
    refs = [CAT, [("D", "AO1", "G")], [("AH0",)]]
    first = [("K", "AE1", "T"), ("D", "AO1", "K"), ("AH0",)]  # wrong on word 1 only
    second = [("K", "AE1"), ("D", "AO1", "G"), ("EH1",)]  # wrong on words 0 and 2
    mine, yours = own_errors([first, second], refs)
    assert mine["words"] == 1 and mine["errors"] == 1 and mine["last_only"] == 1  # word 1: second is right
    assert yours["words"] == 2 and yours["errors"] == 2 and yours["too_short"] == 1  # words 0 and 2: first is right
    assert own_errors([second, second], refs)[0]["errors"] == 0  # wrong where the twin is wrong: none of its own
    assert own_errors([[("X",)] * 3, [("X",)] * 3], refs) == [None, None]  # the other is never right
    with pytest.raises(ValueError, match="at least two models"):
        own_errors([first], refs)


def test_an_ensemble_file_is_profiled_member_by_member(tmp_path, capsys):
    experiment = get_experiment("g2p-transformer")
    task = G2PTask(**experiment.budget("smoke").data)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = experiment.make_model(task, **experiment.budget("smoke").model)
        meta = {"format": "attnlab-model", "version": 1, "model": model_spec(model), "task": task.spec(), "step": 1}
        paths.append(tmp_path / f"m{seed}.safetensors")
        save_tensors(paths[-1], model.state_dict(), meta)
    export_model(paths, tmp_path / "ens.safetensors", ensemble=True, weights=[2, 1])
    rows = model_profiles(tmp_path / "ens.safetensors", limit=12)
    assert [row["label"] for row in rows[:3]] == ["members.0 (Transformer)", "members.1 (Transformer)",
                                                  "ensemble (weights 0.67, 0.33)"]  # fmt: skip
    assert all(row["words"] == 12 and row["split"] == "dev" and row["decode"] == "greedy" for row in rows[:3])
    assert len(model_profiles(paths[0], split="train", limit=5, members=False)) == 1
    assert table(rows).count("\n") == len(rows) + 1  # header, rule, one line per row
    out = tmp_path / "rows.json"
    assert main(["--model", str(paths[0]), "--limit", "6", "--out", str(out)]) == 0
    assert "| Transformer | dev | 6 |" in capsys.readouterr().out
    assert json.loads(out.read_text())[0]["words"] == 6
    with pytest.raises(ValueError, match="split: expected one of"):
        model_profiles(paths[0], split="valid")
