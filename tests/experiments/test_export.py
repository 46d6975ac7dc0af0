"""`attnlab export`: float16 storage that loads back to the model's dtype, checkpoint averaging, refusals."""

from __future__ import annotations

import pytest
import torch

from attnlab.cli import main
from attnlab.experiments import G2PTask, export_model, get_experiment, load_model, model_spec
from attnlab.train.checkpoint import CheckpointError, load_tensors, save_tensors

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def task():
    return G2PTask(**get_experiment("g2p-transformer").budget("smoke").data)


def _weights(tmp_path, task, seed, *, step=10, scale=1.0):
    torch.manual_seed(seed)
    experiment = get_experiment("g2p-transformer")
    model = experiment.make_model(task, **experiment.budget("smoke").model)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
    meta = {"format": "attnlab-model", "version": 1, "model": model_spec(model), "task": task.spec(), "step": step,
            "dev": {"wer_no_stress": 50.0 - seed}}  # fmt: skip
    path = tmp_path / f"w{seed}.safetensors"
    save_tensors(path, model.state_dict(), meta)
    return path, model.state_dict()


def test_float16_export_halves_the_file_and_loads_back_as_float32(tmp_path, task):
    path, state = _weights(tmp_path, task, 0)
    out = tmp_path / "shipped.safetensors"
    export = export_model([path], out)
    assert export["averaged"] == 1 and export["storage_dtype"] == "float16"
    stored, meta = load_tensors(out)
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    assert meta["step"] == 10 and meta["dev"] == {"wer_no_stress": 50.0} and meta["export"]["sources"][0]["step"] == 10
    assert out.stat().st_size < 0.6 * path.stat().st_size
    loaded = load_model(out)
    for name, value in loaded.model.state_dict().items():
        assert value.dtype == state[name].dtype
        # float16 keeps 11 significant bits: relative error at most 2^-11 (absolute below float16's normal range)
        assert torch.allclose(value, state[name], rtol=2**-11, atol=6e-8)


def test_several_sources_are_averaged_parameter_by_parameter(tmp_path, task):
    sources = [_weights(tmp_path, task, seed, step=100 * (seed + 1)) for seed in range(3)]
    out = tmp_path / "avg.safetensors"
    export = export_model([p for p, _ in sources], out, dtype="float32", note="last three")
    assert export["averaged"] == 3 and [s["step"] for s in export["sources"]] == [100, 200, 300]
    tensors, meta = load_tensors(out)
    assert meta["step"] == 300 and meta["dev"] is None and meta["export"]["note"] == "last three"
    for name, value in tensors.items():
        expected = sum(state[name].double() for _, state in sources) / 3
        torch.testing.assert_close(value, expected.float(), rtol=0, atol=1e-7)


def test_export_refuses_mixed_models_overflow_and_overwriting_a_source(tmp_path, task):
    path, _ = _weights(tmp_path, task, 0)
    other_task = G2PTask(**get_experiment("g2p-rnn").budget("smoke").data)
    torch.manual_seed(0)
    experiment = get_experiment("g2p-rnn")
    rnn = experiment.make_model(other_task, **experiment.budget("smoke").model)
    meta = {"format": "attnlab-model", "version": 1, "model": model_spec(rnn), "task": other_task.spec()}
    save_tensors(tmp_path / "rnn.safetensors", rnn.state_dict(), meta)
    with pytest.raises(ValueError, match="its model differs"):
        export_model([path, tmp_path / "rnn.safetensors"], tmp_path / "x.safetensors")
    huge, _ = _weights(tmp_path, task, 1, scale=1e6)
    with pytest.raises(ValueError, match="does not fit float16"):
        export_model([huge], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()
    export_model([huge], tmp_path / "x.safetensors", dtype="bfloat16")  # bfloat16 has float32's range
    with pytest.raises(ValueError, match="is one of the sources"):
        export_model([path], path)
    with pytest.raises(ValueError, match="named twice"):
        export_model([path, path], tmp_path / "y.safetensors")
    with pytest.raises(ValueError, match="dtype: expected one of"):
        export_model([path], tmp_path / "y.safetensors", dtype="int8")
    tensors, meta = load_tensors(path)
    first = next(iter(tensors))
    save_tensors(tmp_path / "nan.safetensors", {**tensors, first: tensors[first] * float("nan")}, meta)
    with pytest.raises(ValueError, match="NaN or infinite"):
        export_model([tmp_path / "nan.safetensors"], tmp_path / "y.safetensors")


def test_a_failed_export_leaves_the_file_it_would_replace_untouched(tmp_path, task):
    path, _ = _weights(tmp_path, task, 0)
    out = tmp_path / "shipped.safetensors"
    export_model([path], out)
    before = out.read_bytes()
    huge, _ = _weights(tmp_path, task, 1, scale=1e6)
    with pytest.raises(ValueError, match="does not fit float16"):
        export_model([huge], out)
    from attnlab.experiments import vision

    canvas = vision.CanvasCNN(vision.CanvasCNNConfig(num_classes=4))  # rebuilds, but is no seq2seq model
    meta = {"format": "attnlab-model", "version": 1, "model": model_spec(canvas), "task": task.spec()}
    for name in ("c1", "c2"):
        save_tensors(tmp_path / f"{name}.safetensors", canvas.state_dict(), meta)
    with pytest.raises(CheckpointError, match="cannot rebuild the model"):
        export_model([tmp_path / "c1.safetensors", tmp_path / "c2.safetensors"], out, ensemble=True)
    assert out.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no trial file left behind


def test_averaging_an_export_with_its_float32_original_gives_the_original_back_within_float16(tmp_path, task):
    path, state = _weights(tmp_path, task, 0)
    export_model([path], tmp_path / "half.safetensors")
    export_model([path, tmp_path / "half.safetensors"], tmp_path / "mean.safetensors", dtype="float32")
    loaded = load_model(tmp_path / "mean.safetensors").model.state_dict()
    for name, value in loaded.items():
        torch.testing.assert_close(value, state[name], rtol=2**-12, atol=3e-8)


def test_a_file_whose_weights_contradict_its_storage_dtype_is_refused(tmp_path, task):
    path, _ = _weights(tmp_path, task, 0)
    tensors, meta = load_tensors(path)
    save_tensors(tmp_path / "liar.safetensors", tensors, {**meta, "storage_dtype": "float16"})
    with pytest.raises(CheckpointError, match="says its weights are float16"):
        load_model(tmp_path / "liar.safetensors")
    save_tensors(tmp_path / "odd.safetensors", tensors, {**meta, "storage_dtype": "float8"})
    with pytest.raises(ValueError, match="storage_dtype: expected one of"):
        load_model(tmp_path / "odd.safetensors")


def test_cli_export_reports_what_it_wrote(tmp_path, task, capsys):
    path, _ = _weights(tmp_path, task, 0)
    assert main(["export", str(path), "--out", str(tmp_path / "s.safetensors")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "s.safetensors").is_file()
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "t.safetensors")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]


def test_ensemble_export_combines_different_models_of_one_task(tmp_path, task):
    transformer_path, transformer_state = _weights(tmp_path, task, 0)
    torch.manual_seed(1)
    experiment = get_experiment("g2p-bahdanau")
    rnn = experiment.make_model(task, **experiment.budget("smoke").model)
    meta = {"format": "attnlab-model", "version": 1, "model": model_spec(rnn), "task": task.spec(),
            "experiment": "g2p-bahdanau", "parameters": sum(p.numel() for p in rnn.parameters())}  # fmt: skip
    save_tensors(tmp_path / "rnn.safetensors", rnn.state_dict(), meta)
    out = tmp_path / "ensemble.safetensors"
    export = export_model([transformer_path, tmp_path / "rnn.safetensors"], out, dtype="float32", ensemble=True)
    assert export["ensemble"] == 2
    loaded = load_model(out)
    assert type(loaded.model).__name__ == "Ensemble" and loaded.metadata["experiment"].startswith("ensemble(")
    state = loaded.model.state_dict()
    assert all(torch.equal(state[f"members.0.{n}"], v) for n, v in transformer_state.items())
    assert all(torch.equal(state[f"members.1.{n}"], v) for n, v in rnn.state_dict().items())
    half = tmp_path / "ensemble16.safetensors"
    export_model([transformer_path, tmp_path / "rnn.safetensors"], half, ensemble=True)  # default float16
    widened = load_model(half).model.state_dict()
    assert {v.dtype for v in widened.values() if v.is_floating_point()} == {torch.float32}
    for name, value in rnn.state_dict().items():
        torch.testing.assert_close(widened[f"members.1.{name}"], value, rtol=2**-11, atol=6e-8)
    with pytest.raises(ValueError, match="at least two models"):
        export_model([transformer_path], tmp_path / "x.safetensors", ensemble=True)
    with pytest.raises(ValueError, match="is an ensemble already"):
        export_model([out, transformer_path], tmp_path / "x.safetensors", ensemble=True)
    other = G2PTask(**get_experiment("g2p-rnn").budget("smoke").data, tgt_vocab=task.src_vocab)
    save_tensors(tmp_path / "other.safetensors", rnn.state_dict(), {**meta, "task": other.spec()})
    with pytest.raises(ValueError, match="its task differs"):
        export_model([transformer_path, tmp_path / "other.safetensors"], tmp_path / "x.safetensors", ensemble=True)


def test_a_file_written_before_the_stress_option_combines_with_a_current_one(tmp_path, task):
    current, _ = _weights(tmp_path, task, 0)
    tensors, meta = load_tensors(current)
    older = tmp_path / "older.safetensors"  # same task; its spec predates the "stress" entry
    save_tensors(older, tensors, {**meta, "task": {k: v for k, v in meta["task"].items() if k != "stress"}})
    for ensemble in (False, True):
        out = tmp_path / f"combined-{ensemble}.safetensors"
        export_model([older, current], out, ensemble=ensemble)
        assert load_model(out).task["stress"] is True
    plain = G2PTask(**get_experiment("g2p-transformer").budget("smoke").data, stress=False)
    save_tensors(tmp_path / "plain.safetensors", tensors, {**meta, "task": plain.spec()})
    with pytest.raises(ValueError, match="its task differs"):  # stress-free and stressed members cannot mix
        export_model([current, tmp_path / "plain.safetensors"], tmp_path / "x.safetensors", ensemble=True)


def test_a_task_the_registry_does_not_rebuild_is_exported_as_is(tmp_path, task):
    path, _ = _weights(tmp_path, task, 0)
    tensors, meta = load_tensors(path)
    canvas = {"name": "canvas", "kind": "pointer"}  # vision and reader tasks carry specs task_from_spec cannot read
    save_tensors(tmp_path / "canvas.safetensors", tensors, {**meta, "task": canvas})
    export_model([tmp_path / "canvas.safetensors"], tmp_path / "out.safetensors")
    assert load_tensors(tmp_path / "out.safetensors")[1]["task"] == canvas


def test_ensemble_weights_are_written_and_refused_without_an_ensemble(tmp_path, task, capsys):
    a, _ = _weights(tmp_path, task, 0)
    b, _ = _weights(tmp_path, task, 1)
    out = tmp_path / "weighted.safetensors"
    assert main(["export", str(a), str(b), "--ensemble", "--weights", "3,1", "--out", str(out)]) == 0
    assert load_model(out).model.weights == (0.75, 0.25)
    assert load_tensors(out)[1]["model"]["config"]["weights"] == [0.75, 0.25]
    capsys.readouterr()
    assert main(["export", str(a), str(b), "--weights", "3,1", "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "only an ensemble has member weights" in capsys.readouterr().err
    assert (
        main(["export", str(a), str(b), "--ensemble", "--weights", "1", "--out", str(tmp_path / "x.safetensors")]) == 1
    )
    assert "one weight per member (2)" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(SystemExit):
        main(["export", str(a), str(b), "--ensemble", "--weights", "3;1", "--out", str(tmp_path / "x.safetensors")])
