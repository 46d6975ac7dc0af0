"""The reader experiments (claim 5): exact reads scored right, smoke budgets train through the library's Trainer,
and the weight files rebuild the readers."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.experiments import BUDGETS, build_model, get_experiment, load_model, model_spec, train_experiment
from attnlab.experiments.reader import (
    CrossReaderModel,
    ReaderBatch,
    ReaderTask,
    SingleStreamReaderModel,
    distort,
    read_strings,
    reader_loss,
    score_reads,
)
from attnlab.train.trainer import TrainData
from attnlab.vision.reader import EOS, VOCAB, CrossReader, SingleStreamReader

READERS = {"reader-cross": CrossReaderModel, "reader-single": SingleStreamReaderModel}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_exact_reads_and_token_accuracy_on_a_hand_example():
    labels = [[3, 1, 4], [1, 5], [9, 2, 6, 5]]
    reads = [[3, 1, 4], [1, 5, 0], [9, 7, 6]]
    scores = score_reads(reads, labels)
    assert scores["exact_reads"] == pytest.approx(1 / 3)  # only the first is read exactly
    # targets: 3+EOS, 2+EOS, 4+EOS = 12 tokens; matched: 4 (all), 2 (digits; EOS missed: the read goes on),
    # 2 (9 and 6; 5 and EOS missed: the read stops one digit early) = 8
    assert scores["token_accuracy"] == pytest.approx(8 / 12)
    assert scores["strings"] == 3
    assert score_reads([], []) == {"exact_reads": 0.0, "token_accuracy": 0.0, "strings": 0}
    assert score_reads([[]], [[]])["exact_reads"] == 1.0
    with pytest.raises(ValueError, match="reads: expected one read per label"):
        score_reads([[1]], [[1], [2]])


def test_task_batches_and_spec():
    task = ReaderTask(train_size=8, test_size=4, min_digits=2, max_digits=3, train_seed=2)
    assert ReaderTask.from_spec(json.loads(json.dumps(task.spec()))).spec() == task.spec()
    data = task.train_data()
    assert isinstance(data, TrainData) and len(data.examples) == 8 and data.loss_fn is reader_loss
    batch = data.collate([0, 3, 5])
    assert isinstance(batch, ReaderBatch)
    assert batch.images.shape == (3, 1, 12, 64) and batch.images.dtype == torch.float32
    canvases = task.canvases("train")
    assert torch.equal(batch.images, canvases.images[[0, 3, 5]])  # stored as uint8 levels, exactly
    for row, i in enumerate([0, 3, 5]):
        label = canvases.labels[i]
        assert batch.tgt_out[row, : len(label) + 1].tolist() == [d + 3 for d in label] + [EOS]
    with pytest.raises(ValueError, match="train_size"):
        ReaderTask(train_size=0)
    with pytest.raises(ValueError, match="split"):
        task.canvases("dev")


def test_distortion_bends_training_canvases_only_and_follows_the_global_rng():
    plain = ReaderTask(train_size=8, test_size=4)
    bent = ReaderTask(train_size=8, test_size=4, distortion=0.8)
    assert bent.spec()["distortion"] == 0.8 and ReaderTask.from_spec(bent.spec()).distortion == 0.8
    images = plain.train_data().collate([0, 1, 2]).images
    torch.testing.assert_close(distort(images, 0.0), images, atol=1e-5, rtol=0)  # no displacement: the same image
    torch.manual_seed(3)
    first = bent.train_data().collate([0, 1, 2]).images
    torch.manual_seed(3)
    again = bent.train_data().collate([0, 1, 2]).images
    assert torch.equal(first, again) and first.shape == images.shape
    assert not torch.allclose(first, images, atol=1e-3)
    assert (first >= 0).all() and (first <= 1 + 1e-6).all()
    # ink stays where it was, give or take the displacement: the string is bent, not moved
    columns = torch.arange(64, dtype=torch.float32)
    centre = (images.sum(dim=(1, 2)) * columns).sum(-1) / images.sum(dim=(1, 2, 3))
    moved = (first.sum(dim=(1, 2)) * columns).sum(-1) / first.sum(dim=(1, 2, 3))
    assert (moved - centre).abs().max() < 1.0
    assert torch.equal(bent.canvases("test").images, plain.canvases("test").images)  # evaluation is untouched
    with pytest.raises(ValueError, match="distortion: expected a number of pixels"):
        ReaderTask(distortion=-1)


def test_reader_loss_is_summed_token_cross_entropy():
    torch.manual_seed(0)
    task = ReaderTask(train_size=4, test_size=2)
    model = get_experiment("reader-single").make_model(task, **get_experiment("reader-single").budget("smoke").model)
    batch = task.train_data().collate([0, 1, 2, 3])
    loss = reader_loss(model, batch)
    logits = model(batch.images, batch.tgt_in)
    assert logits.shape == (*batch.tgt_out.shape, VOCAB)
    real = batch.tgt_out != 0
    expected = torch.nn.functional.cross_entropy(logits[real], batch.tgt_out[real], reduction="sum")
    assert int(loss.tokens) == int(real.sum())
    torch.testing.assert_close(loss.total, expected)


@pytest.mark.parametrize("name", list(READERS))
def test_smoke_budget_trains_evaluates_and_saves_a_loadable_reader(name, tmp_path):
    experiment = get_experiment(name)
    steps = [experiment.budget(budget).train.max_steps for budget in BUDGETS]
    assert steps == sorted(steps) and steps[0] <= 50
    result = train_experiment(name, tmp_path / "run", budget="smoke", progress=False, verbose=False)
    plan = experiment.budget("smoke")
    assert result.step == plan.train.max_steps and result.metric == "exact_reads"
    assert 0.0 <= result.metrics["exact_reads"] <= 1.0
    assert 0.0 <= result.metrics["token_accuracy"] <= 1.0
    assert result.metrics["strings"] == plan.data["test_size"]
    lines = (tmp_path / "run" / "eval.jsonl").read_text().splitlines()
    assert len(lines) == plan.train.max_steps // plan.train.eval_every
    # the weight file rebuilds the reader, which reads exactly what the task's evaluation scored
    loaded = load_model(result.model_path)
    assert type(loaded.model) is READERS[name]
    assert isinstance(loaded.model, CrossReader | SingleStreamReader)
    assert loaded.metadata["task"]["name"] == "digit-strings"
    task = ReaderTask.from_spec(loaded.task)
    assert task.evaluate(loaded.model) == result.metrics
    # and the spec is plain JSON that rebuilds the same model
    rebuilt = build_model(json.loads(json.dumps(model_spec(loaded.model))))
    rebuilt.load_state_dict(loaded.model.state_dict())
    images = task.canvases("test").images[:3]
    assert read_strings(rebuilt.eval(), images) == read_strings(loaded.model, images)
