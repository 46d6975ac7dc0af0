"""Claims 6-11: what attention and self-attention do in sequence models, measured on sequence reversal.

Every comparison trains two models that differ in one thing (see :mod:`attnlab.experiments.lab`) on the same
data with the same schedule, and reads their dev curves and test scores.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from attnlab.experiments import get_experiment, task_from_spec, train_experiment
from attnlab.experiments.lab import GRID_SCORES
from attnlab.experiments.tasks import evenly_spaced
from attnlab.viz import figures

from ..evidence import Figure, Table, Verdict
from ..throughput import Cell, throughput_map
from ..tour import Tour, claim
from ._common import (
    Comparison,
    comparative,
    example_pair,
    example_weights,
    final_metric,
    full_budget_command,
    mean_spread,
    possibility,
    run_numbers,
    steps_to,
)

METRIC = "accuracy"  # percent of sequences reversed exactly
LEARNED = 50.0  # % of test sequences reversed exactly that shows a model has learned the task: chance is about 0
# (20 symbols, up to 20 of them in order), and a model that only copies or guesses the length stays far below half
MATCH_MARGIN = 5.0  # points within which a variant reaches its reference's test accuracy (one seed each)
HEAD_EXAMPLES = 16  # test sequences over which the heads' weights are compared
HEADS_DIFFER = 0.5  # mean L1 per query row between the two most different heads (0 = identical, 2 = disjoint):
# 0.5 moves a quarter of a row's weight elsewhere, far beyond what heads that learned one pattern differ by
COMPARATIVE_SEEDS = {"smoke": 3, "quick": 3, "full": 3}  # the comparative claims (10, 11) rest on 3 seeds
LENGTH_GAP = 10.0  # points: the forgetting (short vs long third) and the attention gain (long third) must exceed
# this and twice the seed spread; on ~200 test sequences per third one seed's binomial noise is about 3.5 points


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


@claim(
    6,
    "Self-attention can simulate attention",
    "A decoder-only model running self-attention over [source; separator; target] with a prefix mask does the "
    "job of an encoder-decoder with cross-attention, at equal size.",
    criterion=f"Possibility, one seed: holds when the decoder-only model learns the task (at least {LEARNED:.0f}% of "
    f"test sequences reversed exactly; chance is about 0) or comes within {MATCH_MARGIN:.0f} points of an "
    "encoder-decoder that learned it; otherwise inconclusive below the full budget (a longer schedule decides) and "
    "does not hold at the full budget.",
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
    verdict = possibility(
        tour,
        6,
        deconly >= LEARNED or (encdec >= LEARNED and deconly >= encdec - MATCH_MARGIN),
        f"decoder-only {deconly:.1f}% vs encoder-decoder {encdec:.1f}% of test sequences exactly right, at "
        f"{ratio:.2f}x the parameters",
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
    "works (the model learns its task), and its heads look at different places.",
    criterion=f"Possibility, one seed: holds when the 4-head model learns the task (at least {LEARNED:.0f}% of test "
    f"sequences reversed exactly) and its heads attend differently (over {HEAD_EXAMPLES} test sequences, the two "
    f"most different heads differ by at least {HEADS_DIFFER} in L1 per query row on average; 0 = identical, 2 = "
    "disjoint). Learned with heads alike: does not hold. Not learned: inconclusive below the full budget, does not "
    "hold at it. The 1-head model is the reference row, not a bar to beat.",
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
    loaded = tour.model("reverse-bahdanau-4heads")
    longer = [pair for pair in task_from_spec(loaded.task).pairs("test") if len(pair[0]) >= 4]  # room to differ
    pairs = evenly_spaced(longer, HEAD_EXAMPLES)
    differences = [_head_difference(example_weights(loaded, src, tgt)[site]) for src, tgt in pairs]
    difference = float(np.mean(differences))
    one, four = numbers["1 head"]["test_accuracy"], numbers["4 heads"]["test_accuracy"]
    numbers["head_difference_l1_per_row"] = difference
    numbers["head_difference_per_example"] = differences
    because = (
        f"4 heads {four:.1f}% test accuracy (1 head: {one:.1f}%); its two most different heads differ by "
        f"{difference:.2f} in L1 per query row on average over {len(pairs)} test sequences (0 = identical, 2 = "
        "disjoint)"
    )
    if four >= LEARNED:
        verdict = Verdict.check(difference >= HEADS_DIFFER, because)
    else:
        verdict = possibility(tour, 7, False, because)
    figure = Figure(
        name,
        "The four heads of one additive cross-attention site over the same source: each head "
        "is its own distribution over the source positions.",
    )
    return verdict, [table], [figure], numbers


def _head_difference(matrices: np.ndarray) -> float:
    """The mean L1 distance per query row between the two most different heads of ``[H, Tq, Tk]`` weights."""
    flat = matrices.reshape(len(matrices), -1)
    return float(np.abs(flat[:, None] - flat[None]).sum(-1).max() / matrices.shape[1])


@claim(
    9,
    "Key, query and value projections apply to attention too",
    "Projecting queries, keys and values with learned matrices is not specific to self-attention: the same "
    "projections work in front of an RNN decoder's cross-attention (the model with them learns its task).",
    criterion=f"Possibility, one seed: holds when the model with Q/K/V projections in front of its cross-attention "
    f"learns the task (at least {LEARNED:.0f}% of test sequences reversed exactly); otherwise inconclusive below the "
    "full budget and does not hold at it. The model without projections is the reference row: on this task both can "
    "reach 100%, and the claim is that projections apply to attention, not that they help here.",
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
    verdict = possibility(
        tour, 9, projected >= LEARNED, f"with projections {projected:.1f}% test accuracy (without: {plain:.1f}%)"
    )
    return verdict, [table], [Figure(name, "Dev accuracy while training, with and without projections.")], numbers


@claim(
    10,
    "Without attention, an encoder-decoder forgets long inputs",
    "An RNN encoder-decoder that must squeeze the input into one vector degrades as inputs get longer; with "
    "attention over every encoder state it does not (Bahdanau et al. 2014, Fig. 2).",
    criterion=f"Comparative, {COMPARATIVE_SEEDS['quick']} seeds (mean +- std): holds when, without attention, "
    "accuracy on the longest third of input lengths is below the shortest third's and, on the longest third, the "
    f"model with attention is above the one without, each by more than {LENGTH_GAP:.0f} points and twice the larger "
    "seed standard deviation; does not hold when either difference goes the other way by that much; otherwise "
    "inconclusive (more seeds or longer inputs, the full budget's lengths up to 100, decide).",
    trains=["reverse-rnn", "reverse-bahdanau"],
    seeds=COMPARATIVE_SEEDS,
)
def length_study(tour: Tour):
    curves, numbers, thirds = {}, {}, {}
    seeds = tour.seeds(COMPARATIVE_SEEDS)
    for label, experiment in (("no attention", "reverse-rnn"), ("Bahdanau attention", "reverse-bahdanau")):
        per_seed = []
        for seed in seeds:
            scores = tour.evaluation(experiment, seed=seed, by_length=True)
            lengths = sorted(int(n) for n in scores["by_length"])
            accuracy = [scores["by_length"][str(n)]["accuracy"] for n in lengths]
            third = max(1, len(lengths) // 3)
            per_seed.append({"seed": seed, "test_accuracy": scores[METRIC], "lengths": lengths, "accuracy": accuracy,
                             "short_accuracy": float(np.mean(accuracy[:third])),
                             "long_accuracy": float(np.mean(accuracy[-third:]))})  # fmt: skip
        curves[label] = (per_seed[0]["lengths"], list(np.mean([run["accuracy"] for run in per_seed], axis=0)))
        thirds[label] = {key: [run[key] for run in per_seed] for key in ("short_accuracy", "long_accuracy",
                                                                          "test_accuracy")}  # fmt: skip
        numbers[label] = {
            "experiment": experiment,
            "seeds": seeds,
            **{key: float(np.mean(values)) for key, values in thirds[label].items()},
            **{f"{key}_per_seed": values for key, values in thirds[label].items()},
            "max_length": per_seed[0]["lengths"][-1],
        }
    path, name = tour.figure("claim-10-length")
    figures.line_chart(
        curves,
        path,
        xlabel="input length",
        ylabel=f"test accuracy % (exact), mean of {len(seeds)} seeds",
        title="Sequence reversal: accuracy by input length",
    )
    rows = [
        [label, numbers[label]["experiment"]] + [mean_spread(thirds[label][key]) for key in
                                                 ("short_accuracy", "long_accuracy", "test_accuracy")]
        for label in thirds
    ]  # fmt: skip
    table = Table(
        "Test accuracy on the shortest and the longest third of input lengths (up to "
        f"{numbers['no attention']['max_length']}), mean +- std over seeds {seeds}",
        ["model", "experiment", "short third %", "long third %", "all %"],
        rows,
    )
    plain, attended = thirds["no attention"], thirds["Bahdanau attention"]
    forgets = Comparison.of(plain["short_accuracy"], plain["long_accuracy"], LENGTH_GAP)
    holds_on = Comparison.of(attended["long_accuracy"], plain["long_accuracy"], LENGTH_GAP)
    numbers["comparison"] = {name: {"difference": c.difference, "margin": c.margin, "outcome": c.outcome}
                             for name, c in (("forgetting", forgets), ("attention_on_long", holds_on))}  # fmt: skip
    outcomes = {forgets.outcome, holds_on.outcome}
    outcome = "behind" if "behind" in outcomes else "ahead" if outcomes == {"ahead"} else (
        "too few seeds" if "too few seeds" in outcomes else "level")  # fmt: skip
    verdict = comparative(
        10,
        outcome,
        f"from the shortest to the longest third, accuracy without attention falls from "
        f"{mean_spread(plain['short_accuracy'], unit='%')} to {mean_spread(plain['long_accuracy'], unit='%')} "
        f"({forgets.describe()}); "
        f"on the longest inputs attention gets {mean_spread(attended['long_accuracy'], unit='%')} "
        f"({holds_on.describe()})",
        budget=tour.budget,
    )
    figure = Figure(
        name,
        "Exact-match accuracy per input length on the test split (mean over seeds): the fixed-vector model fades "
        "with length, the attention model holds.",
    )
    return verdict, [table], [figure], numbers


GRID_SYMBOLS = 20  # the reversal tasks' alphabet
GRID_CHANCE_FACTOR = 5  # 5x chance token accuracy (25%): a score that does not read the right positions stays near
# chance, one that does climbs far past it within the grid's short schedule
SPEED_STEPS = {"smoke": 4, "quick": 40, "full": 100}  # training steps per timing round
SPEED_ROUNDS = 2  # rounds alternate the two models; each model's fastest round counts
# The throughput map: target lengths x batches (fixed sizes, then as many sequences as fit a token budget) x threads.
THROUGHPUT_GRID = {
    "smoke": {"lengths": (8, 32), "batches": (1, 4), "token_budget": 256, "threads": (1, 2)},
    "quick": {"lengths": (16, 128, 1024), "batches": (1, 8), "token_budget": 16384, "threads": (1, 2)},
    "full": {"lengths": (16, 128, 1024), "batches": (1, 8), "token_budget": 16384, "threads": (1, 2)},
}
FASTER = 1.1  # a tokens/s ratio beyond 1.1 (or below 1/1.1) is a win: a few-pass timing on a shared machine moves
# by about 10%, so closer ratios are ties
TIME_FLOOR = 0.1  # a time-to-accuracy difference must exceed 10% of the slower mean (the same timing noise) and
# twice the seed spread
SPEED_MODELS = {"RNN + attention": "reverse-bahdanau", "Transformer": "reverse-transformer"}


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


def _throughput(tour: Tour) -> tuple[list[Cell], dict[str, int]]:
    """The throughput map of this budget's two models (built fresh: timing does not depend on the weights)."""
    torch.manual_seed(tour.seed)
    task = tour.task("reverse-transformer")
    models, sizes = {}, {}
    for label, experiment in SPEED_MODELS.items():
        spec = get_experiment(experiment)
        models[label] = spec.make_model(task, **spec.budget(tour.budget).model)
        sizes[label] = sum(p.numel() for p in models[label].parameters())
    grid = THROUGHPUT_GRID[tour.budget]
    return throughput_map(models, task, seed=tour.seed, **grid), sizes


def _overtakes(cells: list[Cell]) -> dict[tuple[int, str], str]:
    """Per (threads, batch kind): the length from which the Transformer is faster at every longer length too
    (``"from T = 128"``), ``"at every length"``, or ``"not at T = 1024"`` when it is not faster at the longest."""
    rows: dict[tuple[int, str], list[Cell]] = {}
    for cell in cells:
        rows.setdefault((cell.threads, cell.batch_kind), []).append(cell)
    where = {}
    for key, row in rows.items():
        row = sorted(row, key=lambda c: c.length)
        faster = [c.ratio("Transformer", "RNN + attention") >= FASTER for c in row]
        start = len(row)
        while start > 0 and faster[start - 1]:
            start -= 1
        if start == len(row):
            where[key] = f"not at T = {row[-1].length}"
        else:
            where[key] = "at every length" if start == 0 else f"from T = {row[start].length}"
    return where


def _batch_name(kind: str) -> str:
    return f"{kind.replace(' ', '-')} batches" if kind.endswith("tokens") else f"batch {kind}"


@claim(
    11,
    "Self-attention trains faster than recurrence",
    "At equal parameter count a Transformer processes more tokens per second than an RNN encoder-decoder with "
    "attention (no step-by-step recurrence) and reaches a given accuracy sooner.",
    criterion=f"Comparative. Tokens/s: a throughput map of forward+backward passes (the equal-size models; target "
    f"lengths {', '.join(map(str, THROUGHPUT_GRID['quick']['lengths']))}; batches of "
    f"{', '.join(map(str, THROUGHPUT_GRID['quick']['batches']))} and of "
    f"{THROUGHPUT_GRID['quick']['token_budget']:,} tokens; 1 and 2 threads; the smoke budget times a small grid); "
    f"a cell counts for the faster model when the ratio of tokens/s passes {FASTER} (a tie within it). Time to "
    f"accuracy: seconds to 90% of the weaker run's best dev accuracy, {COMPARATIVE_SEEDS['quick']} seeds, a "
    f"difference counting beyond {TIME_FLOOR:.0%} of the slower mean and twice the seed spread. Holds when the "
    "Transformer is faster in every cell and sooner to the target; "
    "does not hold when the RNN is faster in any cell or sooner beyond the margin (the verdict then names where "
    "self-attention does overtake recurrence: the claim is conditional); otherwise inconclusive.",
    trains=list(SPEED_MODELS.values()),
    seeds=COMPARATIVE_SEEDS,
)
def speed(tour: Tour):
    names = SPEED_MODELS
    seeds = tour.seeds(COMPARATIVE_SEEDS)
    table, numbers = _compare(tour, names)
    # Speed is timed here, back to back with nothing else training (the runs above may have shared the cores
    # with other trainings); accuracy against steps comes from the runs' dev evaluations.
    tour.settle()
    rounds = [{label: _timed_training(tour, exp) for label, exp in names.items()} for _ in range(SPEED_ROUNDS)]
    histories = {label: {seed: tour.history(exp, seed=seed) for seed in seeds} for label, exp in names.items()}
    target = 0.9 * min(final_metric(history, METRIC) for runs in histories.values() for history in runs.values())
    series, seconds_to = {}, {}
    for label in names:
        fastest = max((r[label] for r in rounds), key=lambda timing: timing["tokens_per_s"])
        per_step = fastest["seconds_per_step"]
        # every run reaches the target (it is below each run's best); a run never evaluated counts its last step
        steps = [steps_to(h, METRIC, target) or (h[-1]["step"] if h else 0) for h in histories[label].values()]
        seconds_to[label] = [step * per_step for step in steps]
        numbers[label].update(
            tokens_per_s=fastest["tokens_per_s"],
            seconds_per_step=per_step,
            steps_to_target_per_seed=steps,
            seconds_to_target_per_seed=seconds_to[label],
        )
        history = histories[label][seeds[0]]
        series[label] = (
            [0.0] + [row["step"] * per_step for row in history],
            [0.0] + [row[METRIC] for row in history],
        )
    numbers["target_dev_accuracy"] = target
    numbers["seeds"] = seeds
    time_table = Table(
        f"Sequence reversal: training speed timed back to back, {SPEED_ROUNDS} rounds of {SPEED_STEPS[tour.budget]} "
        f"steps (fastest counts); time to {target:.0f}% dev accuracy = steps x seconds per step, mean +- std over "
        f"seeds {seeds}",
        [*table.columns, "train tokens/s", "s/step", "steps to target", "s to target"],
        [
            [*row, round(n["tokens_per_s"]), round(n["seconds_per_step"], 4),
             mean_spread(n["steps_to_target_per_seed"], 0), mean_spread(seconds_to[label])]
            for row, label, n in zip(table.rows, names, (numbers[label] for label in names), strict=True)
        ],
    )  # fmt: skip
    numbers["timing"] = {"steps_per_round": SPEED_STEPS[tour.budget], "rounds": SPEED_ROUNDS,
                         "threads": torch.get_num_threads()}  # fmt: skip
    path, name = tour.figure("claim-11-speed")
    figures.line_chart(
        series, path, xlabel="training seconds (steps x measured s/step)", ylabel="dev accuracy %",
        title=f"Time to accuracy at equal size (seed {seeds[0]})",
    )  # fmt: skip

    # The throughput map: where self-attention's parallelism over positions pays.
    began = time.perf_counter()
    cells, sizes = _throughput(tour)
    numbers["throughput_seconds"] = round(time.perf_counter() - began, 1)
    numbers["throughput_map"] = [asdict(cell) for cell in cells]
    ratio = {id(c): c.ratio("Transformer", "RNN + attention") for c in cells}
    faster = [c for c in cells if ratio[id(c)] >= FASTER]
    slower = [c for c in cells if ratio[id(c)] <= 1 / FASTER]
    overtakes = _overtakes(cells)
    lengths = sorted({c.length for c in cells})
    kinds = list(dict.fromkeys(c.batch_kind for c in cells))
    thread_counts = sorted({c.threads for c in cells})
    by_key = {(c.threads, c.batch_kind, c.length): c for c in cells}
    map_rows, matrix, row_labels = [], [], []
    for threads in thread_counts:
        for kind in kinds:
            row = [by_key.get((threads, kind, length)) for length in lengths]
            map_rows.append([threads, _batch_name(kind), *[None if c is None else round(ratio[id(c)], 2) for c in row],
                             overtakes[threads, kind]])  # fmt: skip
            matrix.append([float("nan") if c is None else ratio[id(c)] for c in row])
            row_labels.append(f"{threads} thr, {_batch_name(kind)}")
    map_table = Table(
        f"Throughput map: Transformer tokens/s / RNN tokens/s, forward+backward, {sizes['Transformer']:,} vs "
        f"{sizes['RNN + attention']:,} parameters (> {FASTER}: self-attention faster, < {1 / FASTER:.2f}: recurrence "
        f"faster); timed in {numbers['throughput_seconds']:.0f} s",
        ["threads", "batch", *[f"T = {length}" for length in lengths], "Transformer faster"],
        map_rows,
    )
    cell_table = Table(
        "Throughput map, every cell: target tokens per second, forward+backward",
        ["threads", "batch (sequences)", "T", "Transformer tokens/s", "RNN + attention tokens/s", "ratio"],
        [[c.threads, f"{c.batch} ({_batch_name(c.batch_kind)})" if c.batch_kind.endswith("tokens") else c.batch,
          c.length, round(c.tokens_per_s["Transformer"]), round(c.tokens_per_s["RNN + attention"]),
          round(ratio[id(c)], 2)] for c in cells],
    )  # fmt: skip
    map_path, map_name = tour.figure("claim-11-throughput")
    figures.alignment_heatmap(
        matrix, [f"T={length}" for length in lengths], row_labels, map_path, annotate=True, xlabel="target length",
        ylabel="", title="Transformer / RNN tokens per second (forward+backward)",
    )  # fmt: skip

    rnn_time, sa_time = seconds_to["RNN + attention"], seconds_to["Transformer"]
    floor = TIME_FLOOR * max(np.mean(rnn_time), np.mean(sa_time))
    sooner = Comparison.of([-t for t in sa_time], [-t for t in rnn_time], floor)
    numbers["time_to_target"] = {"difference_s": sooner.difference, "margin_s": sooner.margin,
                                 "outcome": sooner.outcome}  # fmt: skip
    where = "; ".join(
        f"{threads} thread{'s' if threads > 1 else ''}: "
        + ", ".join(f"{_batch_name(kind)} {overtakes[threads, kind]}" for kind in kinds if (threads, kind) in overtakes)
        for threads in thread_counts
    )
    because = (
        f"the Transformer is faster in {len(faster)} of {len(cells)} cells of the throughput map and the RNN in "
        f"{len(slower)}; where self-attention is faster up to the longest length: {where}. Time to {target:.0f}% dev "
        f"accuracy at the training setting: Transformer {mean_spread(sa_time, unit=' s')} vs RNN "
        f"{mean_spread(rnn_time, unit=' s')} "
        f"({sooner.describe(' s', 'RNN minus Transformer')})"
    )
    if slower or not faster or sooner.outcome == "behind":
        verdict = Verdict("does not hold", f"not in general: {because}")
    elif len(faster) == len(cells) and sooner.outcome == "ahead":
        verdict = Verdict("holds", because)
    else:
        ties = len(cells) - len(faster)
        verdict = Verdict.inconclusive(
            because + (f"; {ties} cells are ties" if ties else "") + (
                "; the time difference is within the seed spread" if sooner.outcome != "ahead" else ""),
            "longer timings on a quiet machine for the tied cells, more seeds for the time to accuracy "
            f"(`{full_budget_command(11)}` trains the full schedule)",
        )  # fmt: skip
    figures_out = [
        Figure(
            map_name,
            "Throughput map: the Transformer's forward+backward tokens per second over the RNN's, per thread count, "
            "batch and target length (above 1: self-attention faster).",
        ),
        Figure(
            name,
            "Dev accuracy against training time for the two models of equal size: each run's dev evaluations, "
            "placed at step x the seconds per step timed back to back.",
        ),
    ]
    return verdict, [map_table, cell_table, time_table], figures_out, numbers


@claim(
    8,
    "Every score function serves attention and self-attention",
    "Score functions (dot, scaled dot, general, additive, cosine, location) are independent of who attends to "
    "whom: each one trains as cross-attention in an RNN decoder and as self-attention in a Transformer.",
    criterion=f"Possibility, one seed per pairing: holds when every score reaches {GRID_CHANCE_FACTOR}x chance "
    f"token accuracy (chance is {100 / GRID_SYMBOLS:.0f}% over {GRID_SYMBOLS} symbols) both as cross-attention (AT) "
    "and as self-attention (SA); a pairing below that is inconclusive below the full budget and does not hold at it.",
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
    chance = 100.0 / GRID_SYMBOLS
    weakest = min(numbers.items(), key=lambda item: item[1]["token_accuracy"])
    verdict = possibility(
        tour,
        8,
        weakest[1]["token_accuracy"] >= GRID_CHANCE_FACTOR * chance,
        f"the weakest pairing, {weakest[0]}, gets {weakest[1]['token_accuracy']:.1f}% of tokens right (chance is "
        f"{chance:.0f}%)",
    )
    figure = Figure(name, "Test token accuracy of each score used as cross-attention (AT) and as self-attention (SA).")
    return verdict, [table], [figure], numbers
