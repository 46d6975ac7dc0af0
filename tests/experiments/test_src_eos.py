"""G2P with an end-of-word symbol after each source word (``G2PTask(src_eos=True)``, ``g2p-transformer-srceos``):
the option changes nothing else, reaches training and decoding alike, and files without it load as before."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.cli import main
from attnlab.data import Vocab
from attnlab.experiments import (
    BUDGETS,
    SHIPPED_G2P_MODEL,
    G2PTask,
    export_model,
    get_experiment,
    load_model,
    model_spec,
    task_from_spec,
)
from attnlab.experiments.tasks import decode
from attnlab.train.checkpoint import load_metadata, load_tensors, save_tensors

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tasks():
    base, variant = get_experiment("g2p-transformer"), get_experiment("g2p-transformer-srceos")
    data = base.budget("smoke").data
    return base.make_task(**data), variant.make_task(**data)


def test_the_srceos_variant_differs_from_its_base_only_in_the_source_eos(tasks):
    base, variant = get_experiment("g2p-transformer"), get_experiment("g2p-transformer-srceos")
    assert variant.make_model is base.make_model
    assert dict(variant.budgets) == dict(base.budgets) and set(BUDGETS) <= set(variant.budgets)
    plain, ended = tasks
    assert plain.src_eos is False and ended.src_eos is True
    difference = {k for k in plain.spec() if plain.spec()[k] != ended.spec()[k]}
    assert difference == {"src_eos"} and plain.spec().keys() == ended.spec().keys()
    for budget in BUDGETS:  # same data at every budget, so the two train on the same words
        data = variant.budget(budget).data
        assert variant.make_task(**data).spec() == {**base.make_task(**data).spec(), "src_eos": True}
    # the same examples and lengths, so bucketing and the token budget cut the same batches of words
    a, b = plain.train_data(), ended.train_data()
    assert a.examples == b.examples and a.lengths == b.lengths


def test_every_training_source_ends_in_eos_and_the_targets_are_unchanged(tasks):
    plain, ended = tasks
    examples = ended.train_data().examples
    batch, base = ended.train_data().collate(examples), plain.train_data().collate(examples)
    eos = ended.src_vocab.eos_id
    last = batch.src[torch.arange(len(examples)), batch.src_lengths - 1]  # (B,) the last real source id
    assert torch.equal(last, torch.full_like(last, eos))
    assert torch.equal(batch.src_lengths, base.src_lengths + 1)
    assert torch.equal(batch.src[:, :-1][base.src != 0], base.src[base.src != 0])  # letters where they were
    assert int((batch.src == eos).sum()) == len(examples)  # one EOS per source, nowhere else
    assert not (base.src == eos).any()
    for name in ("tgt_in", "tgt_out", "tgt_lengths"):
        assert torch.equal(getattr(batch, name), getattr(base, name))


class _Recorder(torch.nn.Module):
    """A decodable stand-in that records the sources it is given and emits EOS at once."""

    def __init__(self, vocab: Vocab) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.seen = vocab, []

    def encode(self, src, src_lengths):
        self.seen += [row[:n].tolist() for row, n in zip(src, src_lengths, strict=True)]
        return src.shape[0]

    def step(self, state, tokens):
        log_probs = torch.full((state, len(self.vocab)), -1e9)
        log_probs[:, self.vocab.eos_id] = 0.0
        return log_probs, state

    def reorder(self, state, index):
        return len(index)


def test_decoding_reads_the_sources_as_the_task_trained_on_them(tasks):
    plain, ended = tasks
    words = ["cat", "a", "strengths"]
    for task, tail in ((plain, []), (ended, [ended.src_vocab.eos_id])):
        recorder = _Recorder(task.tgt_vocab)
        assert task.decode(recorder, words) == [[], [], []]
        expected = sorted([task.src_vocab.encode(w) + tail for w in words], key=len)  # decode sorts by length
        assert recorder.seen == expected
        recorder.seen = []
        task.evaluate(recorder, [(w, [("K",)]) for w in words])  # the dev metric decodes the same way
        assert recorder.seen == expected
    with pytest.raises(TypeError, match="src_eos: expected a bool"):
        decode(_Recorder(plain.tgt_vocab), words, plain.src_vocab, plain.tgt_vocab, src_eos="yes")
    with pytest.raises(TypeError, match="src_eos: expected a bool, received int 1"):
        G2PTask(src_eos=1)


def test_specs_round_trip_and_files_written_before_the_option_load_without_it(tmp_path, tasks):
    plain, ended = tasks
    assert task_from_spec(json.loads(json.dumps(ended.spec()))).src_eos is True
    assert task_from_spec(json.loads(json.dumps(plain.spec()))).src_eos is False
    old_spec = {k: v for k, v in plain.spec().items() if k != "src_eos"}  # files written before the option
    assert task_from_spec(old_spec).src_eos is False and task_from_spec(old_spec).spec() == plain.spec()

    torch.manual_seed(0)
    experiment = get_experiment("g2p-transformer")
    model = experiment.make_model(plain, **experiment.budget("smoke").model)
    meta = {"format": "attnlab-model", "version": 1, "model": model_spec(model), "step": 10}
    older, current, ends = (tmp_path / f"{n}.safetensors" for n in ("older", "current", "ends"))
    save_tensors(older, model.state_dict(), {**meta, "task": old_spec})
    save_tensors(current, model.state_dict(), {**meta, "task": plain.spec()})
    save_tensors(ends, model.state_dict(), {**meta, "task": ended.spec()})
    for ensemble in (False, True):  # export canonicalizes the specs: the old file and the current one agree
        out = tmp_path / f"combined-{ensemble}.safetensors"
        export_model([older, current], out, ensemble=ensemble)
        assert load_model(out).task["src_eos"] is False
    with pytest.raises(ValueError, match="its task differs"):  # models that read different sources cannot mix
        export_model([current, ends], tmp_path / "x.safetensors", ensemble=True)


def test_the_srceos_experiment_trains_and_its_file_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "g2p-transformer-srceos", "--budget", "smoke", "--max-steps", "4", "--out", str(run),
                 "--device", "cpu"]) == 0  # fmt: skip
    capsys.readouterr()
    assert load_tensors(run / "model.safetensors")[1]["task"]["src_eos"] is True
    assert main(["eval", "g2p", "--model", str(run), "--split", "dev", "--limit", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["words"] == 10


def test_the_base_experiments_keep_their_sources_unchanged():
    for name in ("g2p-transformer", "g2p-bahdanau", "g2p-transformer-nostress", "g2p-decoder-only"):
        experiment = get_experiment(name)
        task = experiment.make_task(**experiment.budget("smoke").data)
        assert task.src_eos is False
        batch = task.train_data().collate(task.train_data().examples[:8])
        assert not (batch.src == task.src_vocab.eos_id).any()
    shipped = task_from_spec(load_metadata(SHIPPED_G2P_MODEL)["task"])  # written before the option
    assert shipped.src_eos is False and G2PTask().src_eos is False
