"""Claims 6-11: what attention and self-attention do in sequence models, measured on sequence reversal.

Every comparison trains two models that differ in one thing (see :mod:`attnlab.experiments.lab`) on the same
data with the same schedule, and reads their dev curves and test scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attnlab.experiments import train_experiment
from attnlab.experiments.lab import GRID_SCORES
from attnlab.viz import figures

from ..evidence import Figure, Table, Verdict
from ..tour import Tour, claim
from ._common import example_pair, example_weights, run_numbers, steps_to

METRIC = "accuracy"  # percent of sequences reversed exactly


def _compare(tour: Tour, names: dict[str, str]) -> tuple[Table, dict[str, dict[str, Any]]]:
    """Test accuracy, best dev accuracy, parameters and speed of several runs, one row each."""
    rows, numbers = [], {}
    for label, experiment in names.items():
        test = {"test_accuracy": METRIC, "token_accuracy": "token_accuracy"}
        numbers[label], _ = run_numbers(tour, experiment, test, {"dev_accuracy": METRIC}, speed=True)
        row = numbers[label]
        rows.append(
            [
                label,
                experiment,
                row["parameters"],
                round(row["test_accuracy"], 1),
                round(row["token_accuracy"], 1),
            ]
        )
    # Training speed is not tabled here: the runs may have trained beside others (claim 11 times it alone).
    columns = ["model", "experiment", "parameters", "test accuracy %", "token accuracy %"]
    return Table("Sequence reversal, test split (greedy decoding)", columns, rows), numbers


def _as_good(candidate: float, baseline: float) -> bool:
    """Whether a variant trains as well as the model it varies: test accuracy within 5 points and above 50%."""
    return candidate >= baseline - 5.0 and candidate >= 50.0


@claim(
    6,
    "Self-attention can simulate attention",
    "A decoder-only model running self-attention over [source; separator; target] with a prefix mask does the "
    "job of an encoder-decoder with cross-attention, at equal size.",
    trains=["reverse-transformer", "reverse-decoder-only"],
)
def decoder_only(tour: Tour):
    table, numbers = _compare(
        tour, {"encoder-decoder (SA + AT)": "reverse-transformer", "decoder-only (SA only)": "reverse-decoder-only"}
    )
    source, target = example_pair(tour, "reverse-decoder-only")
    weights = example_weights(tour.model("reverse-decoder-only"), source, target)
    last = sorted(weights)[-1]
    stream = weights[last].mean(0)  # [T, T] over [source; SEP; target], averaged over heads
    boundary = len(source) + 1
    labels = [*source, "SEP", "BOS", *target]  # the stream: [source; SEP; BOS + target]
    size = stream.shape[0]
    mask = np.tril(np.ones((size, size), dtype=bool))
    mask[:boundary, :boundary] = True  # the source block sees itself both ways
    path, name = tour.figure("claim-6-prefix-mask")
    figures.mask_structure(
        mask,
        path,
        boundary=boundary,
        labels=labels,
        weights=stream,
        weights_title=f"learned weights ({last}, mean over heads)",
    )
    encdec = numbers["encoder-decoder (SA + AT)"]["test_accuracy"]
    deconly = numbers["decoder-only (SA only)"]["test_accuracy"]
    ratio = numbers["decoder-only (SA only)"]["parameters"] / numbers["encoder-decoder (SA + AT)"]["parameters"]
    verdict = Verdict.check(
        _as_good(deconly, encdec),
        f"decoder-only {deconly:.1f}% vs encoder-decoder {encdec:.1f}% of test sequences exactly right, at "
        f"{ratio:.2f}x the parameters (holds when within 5 points and above 50%)",
    )
    figure = Figure(
        name,
        "Left: the prefix-LM mask over [source; SEP; target] (source block bidirectional, target "
        "causal). Right: what the trained decoder-only model's last layer attends to: target rows read "
        "the source block, the way cross-attention would.",
    )
    return verdict, [table], [figure], numbers


@claim(
    7,
    "Multi-head applies to attention too",
    "Multi-head is not a self-attention feature: an RNN decoder's additive cross-attention split into heads "
    "trains as well as one head, and its heads look at different places.",
    trains=["reverse-bahdanau", "reverse-bahdanau-4heads"],
)
def multi_head(tour: Tour):
    table, numbers = _compare(tour, {"1 head": "reverse-bahdanau", "4 heads": "reverse-bahdanau-4heads"})
    source, target = example_pair(tour, "reverse-bahdanau-4heads")
    heads = example_weights(tour.model("reverse-bahdanau-4heads"), source, target)
    site = next(iter(heads))
    matrices = heads[site]  # [H, Tq, Tk]
    path, name = tour.figure("claim-7-heads")
    figures.attention_grid(
        matrices,
        path,
        titles=[f"head {h}" for h in range(len(matrices))],
        x_labels=source,
        y_labels=[*target, "EOS"],
        suptitle=f"{site}: 4-head additive AT",
    )
    flat = matrices.reshape(len(matrices), -1)
    spread = float(np.abs(flat[:, None] - flat[None]).sum(-1).max() / matrices.shape[1])  # max L1 between heads/row
    one, four = numbers["1 head"]["test_accuracy"], numbers["4 heads"]["test_accuracy"]
    numbers["head_difference_l1_per_row"] = spread
    verdict = Verdict.check(
        _as_good(four, one),
        f"4 heads {four:.1f}% vs 1 head {one:.1f}% test accuracy; heads differ by up to {spread:.2f} "
        "(L1 per query row, 0 = identical, 2 = disjoint)",
    )
    figure = Figure(
        name,
        "The four heads of one additive cross-attention site over the same source: each head "
        "is its own distribution over the source positions.",
    )
    return verdict, [table], [figure], numbers


@claim(
    9,
    "Key, query and value projections apply to attention too",
    "Projecting queries, keys and values with learned matrices is not specific to self-attention: the same "
    "projections in front of an RNN decoder's cross-attention train just as well.",
    trains=["reverse-bahdanau", "reverse-bahdanau-projected"],
)
def projections(tour: Tour):
    table, numbers = _compare(
        tour, {"no projections": "reverse-bahdanau", "Q/K/V projections": "reverse-bahdanau-projected"}
    )
    plain, projected = numbers["no projections"]["test_accuracy"], numbers["Q/K/V projections"]["test_accuracy"]
    series = {
        label: ([row["train_seconds"] for row in tour.history(exp)], [row[METRIC] for row in tour.history(exp)])
        for label, exp in (("no projections", "reverse-bahdanau"), ("Q/K/V projections", "reverse-bahdanau-projected"))
    }
    path, name = tour.figure("claim-9-curves")
    figures.line_chart(
        series,
        path,
        xlabel="training seconds",
        ylabel="dev accuracy %",
        title="Additive cross-attention with and without Q/K/V projections",
    )
    verdict = Verdict.check(
        _as_good(projected, plain),
        f"with projections {projected:.1f}% vs without {plain:.1f}% test accuracy",
    )
    return verdict, [table], [Figure(name, "Dev accuracy while training, with and without projections.")], numbers


@claim(
    10,
    "Without attention, an encoder-decoder forgets long inputs",
    "An RNN encoder-decoder that must squeeze the input into one vector degrades as inputs get longer; with "
    "attention over every encoder state it does not (Bahdanau et al. 2014, Fig. 2).",
    trains=["reverse-rnn", "reverse-bahdanau"],
)
def length_study(tour: Tour):
    curves, numbers = {}, {}
    for label, experiment in (("no attention", "reverse-rnn"), ("Bahdanau attention", "reverse-bahdanau")):
        scores = tour.evaluation(experiment, by_length=True)
        lengths = sorted(int(n) for n in scores["by_length"])
        accuracy = [scores["by_length"][str(n)]["accuracy"] for n in lengths]
        curves[label] = (lengths, accuracy)
        third = max(1, len(lengths) // 3)
        numbers[label] = {
            "experiment": experiment,
            "test_accuracy": scores[METRIC],
            "short_accuracy": float(np.mean(accuracy[:third])),
            "long_accuracy": float(np.mean(accuracy[-third:])),
            "max_length": lengths[-1],
        }
    path, name = tour.figure("claim-10-length")
    figures.line_chart(
        curves,
        path,
        xlabel="input length",
        ylabel="test accuracy % (exact)",
        title="Sequence reversal: accuracy by input length",
    )
    rows = [
        [
            label,
            n["experiment"],
            round(n["short_accuracy"], 1),
            round(n["long_accuracy"], 1),
            round(n["test_accuracy"], 1),
        ]
        for label, n in numbers.items()
    ]
    table = Table(
        "Test accuracy on the shortest and the longest third of input lengths (up to "
        f"{numbers['no attention']['max_length']})",
        ["model", "experiment", "short third %", "long third %", "all %"],
        rows,
    )
    plain, attended = numbers["no attention"], numbers["Bahdanau attention"]
    drop_plain = plain["short_accuracy"] - plain["long_accuracy"]
    drop_attended = attended["short_accuracy"] - attended["long_accuracy"]
    verdict = Verdict.check(
        drop_plain >= 10.0 and attended["long_accuracy"] >= plain["long_accuracy"] + 10.0,
        f"from the shortest to the longest third, accuracy falls by {drop_plain:.1f} points without attention and "
        f"by {drop_attended:.1f} with it; on the longest inputs {attended['long_accuracy']:.1f}% vs "
        f"{plain['long_accuracy']:.1f}%",
    )
    figure = Figure(
        name,
        "Exact-match accuracy per input length on the test split: the fixed-vector model fades "
        "with length, the attention model holds.",
    )
    return verdict, [table], [figure], numbers


SPEED_STEPS = {"smoke": 4, "quick": 40, "full": 100}  # training steps per timing round
SPEED_ROUNDS = 2  # rounds alternate the two models; each model's fastest round counts


def _timed_training(tour: Tour, experiment: str) -> dict[str, float]:
    """Train ``experiment`` (this budget's model, data and batches) for SPEED_STEPS steps in this process and
    return its training tokens/s and seconds per step, as the Trainer measures them (evaluation excluded)."""
    run = tour.out / "runs" / tour.budget / f"timing-{experiment}"
    result = train_experiment(
        experiment,
        run,
        budget=tour.budget,
        max_steps=SPEED_STEPS[tour.budget],
        seed=tour.seed,
        force=run.exists(),
        progress=False,
        verbose=False,
    )
    return {"tokens_per_s": result.tokens_per_s, "seconds_per_step": result.train_seconds / max(result.step, 1)}


@claim(
    11,
    "Self-attention trains faster than recurrence",
    "At equal parameter count a Transformer processes more tokens per second than an RNN encoder-decoder with "
    "attention (no step-by-step recurrence) and reaches a given accuracy sooner.",
    trains=["reverse-bahdanau", "reverse-transformer"],
)
def speed(tour: Tour):
    names = {"RNN + attention": "reverse-bahdanau", "Transformer": "reverse-transformer"}
    table, numbers = _compare(tour, names)
    # Speed is timed here, back to back with nothing else training (the runs above may have shared the cores
    # with other trainings); accuracy against steps comes from the runs' dev evaluations.
    tour.settle()
    rounds = [{label: _timed_training(tour, exp) for label, exp in names.items()} for _ in range(SPEED_ROUNDS)]
    target = 0.9 * min(numbers[label]["dev_accuracy"] for label in names)
    series = {}
    for label, experiment in names.items():
        fastest = max((r[label] for r in rounds), key=lambda timing: timing["tokens_per_s"])
        history = tour.history(experiment)
        steps = steps_to(history, METRIC, target)
        per_step = fastest["seconds_per_step"]
        numbers[label].update(
            tokens_per_s=fastest["tokens_per_s"],
            seconds_per_step=per_step,
            steps_to_target=steps,
            seconds_to_target=None if steps is None else steps * per_step,
        )
        series[label] = (
            [0.0] + [row["step"] * per_step for row in history],
            [0.0] + [row[METRIC] for row in history],
        )
    numbers["target_dev_accuracy"] = target
    table = Table(
        f"Sequence reversal: speed timed back to back, {SPEED_ROUNDS} rounds of {SPEED_STEPS[tour.budget]} steps "
        f"(fastest counts); time to {target:.0f}% dev accuracy = steps x seconds per step",
        [*table.columns, "train tokens/s", "s/step", "steps to target", "s to target"],
        [
            [*row, round(n["tokens_per_s"]), round(n["seconds_per_step"], 4), n["steps_to_target"],
             None if n["seconds_to_target"] is None else round(n["seconds_to_target"], 1)]
            for row, n in zip(table.rows, (numbers[label] for label in names), strict=True)
        ],
    )  # fmt: skip
    numbers["timing"] = {"steps_per_round": SPEED_STEPS[tour.budget], "rounds": SPEED_ROUNDS,
                         "threads": torch.get_num_threads()}  # fmt: skip
    path, name = tour.figure("claim-11-speed")
    figures.line_chart(
        series, path, xlabel="training seconds (steps x measured s/step)", ylabel="dev accuracy %",
        title="Time to accuracy at equal size",
    )  # fmt: skip
    rnn, sa = numbers["RNN + attention"], numbers["Transformer"]
    faster_tokens = sa["tokens_per_s"] > rnn["tokens_per_s"]
    reached = sa["seconds_to_target"] is not None and (
        rnn["seconds_to_target"] is None or sa["seconds_to_target"] <= rnn["seconds_to_target"]
    )

    def seconds(value: float | None) -> str:
        return "never" if value is None else f"{value:.0f} s"

    verdict = Verdict.check(
        faster_tokens and reached,
        f"Transformer {sa['tokens_per_s']:,.0f} vs RNN {rnn['tokens_per_s']:,.0f} training tokens/s (timed back to "
        f"back, {torch.get_num_threads()} thread(s)); {target:.0f}% dev accuracy after "
        f"{seconds(sa['seconds_to_target'])} vs {seconds(rnn['seconds_to_target'])} of training",
    )
    figure = Figure(
        name,
        "Dev accuracy against training time for the two models of equal size: each run's dev evaluations, placed "
        "at step x the seconds per step timed back to back.",
    )
    return verdict, [table], [figure], numbers


@claim(
    8,
    "Every score function serves attention and self-attention",
    "Score functions (dot, scaled dot, general, additive, cosine, location) are independent of who attends to "
    "whom: each one trains as cross-attention in an RNN decoder and as self-attention in a Transformer.",
    trains=[f"{prefix}-{score}" for prefix in ("scores-rnn", "scores-transformer") for score in GRID_SCORES],
)
def score_grid(tour: Tour):
    rows, numbers, bars = [], {}, {}
    for score in GRID_SCORES:
        row = [score]
        for role, prefix in (("AT", "scores-rnn"), ("SA", "scores-transformer")):
            test = tour.evaluation(f"{prefix}-{score}")
            numbers[f"{role}-{score}"] = {"test_accuracy": test[METRIC], "token_accuracy": test["token_accuracy"]}
            row += [round(test[METRIC], 1), round(test["token_accuracy"], 1)]
            bars[f"{score} {role}"] = test["token_accuracy"]
        rows.append(row)
    table = Table(
        "Short reversal (test split): exact-sequence and token accuracy per score and role",
        ["score", "AT: sequences %", "AT: tokens %", "SA: sequences %", "SA: tokens %"],
        rows,
    )
    path, name = tour.figure("claim-8-scores")
    figures.bar_chart(
        bars,
        path,
        ylabel="test token accuracy %",
        title="Every score as AT (RNN) and SA (Transformer)",
        value_format="{:.0f}",
    )
    chance = 100.0 / 20  # 20 symbols
    weakest = min(numbers.items(), key=lambda item: item[1]["token_accuracy"])
    verdict = Verdict.check(
        weakest[1]["token_accuracy"] >= 5 * chance,
        f"the weakest pairing, {weakest[0]}, gets {weakest[1]['token_accuracy']:.1f}% of tokens right (chance is "
        f"{chance:.0f}%; holds when every pairing reaches 5x chance)",
    )
    figure = Figure(name, "Test token accuracy of each score used as cross-attention (AT) and as self-attention (SA).")
    return verdict, [table], [figure], numbers
