"""Claims 5 and 13: attention across modalities (text reading an image) and self-attention inside CNNs."""

from __future__ import annotations

import torch

from attnlab.viz import figures
from attnlab.viz.images import overlay_maps

from ..evidence import Figure, Table, Verdict
from ..image_maps import pixel_attention_map, reader_token_maps
from ..tour import Tour, claim
from ._common import run_numbers

READERS = {"cross-attention reader (AT)": "reader-cross", "single-stream reader (SA)": "reader-single"}
# The long-range canvas task: the class of the digit an arrow points at, far from the arrow. Plain CNN vs blocks.
CANVAS = {
    "plain CNN": "canvas-pointer-cnn",
    "CNN + SAGAN": "canvas-pointer-sagan",
    "CNN + non-local": "canvas-pointer-nonlocal",
    "CNN + BoTNet": "canvas-pointer-botnet",
    "ViT": "canvas-pointer-vit",
}


def _test_canvas(tour: Tour, experiment: str) -> tuple[torch.Tensor, list[int] | int]:
    canvases = tour.task(experiment).canvases("test")
    return canvases.images[0], canvases.labels[0]


@claim(
    5,
    "Attention connects two modalities, and so does self-attention over one joint sequence",
    "A text decoder attending over CNN image features reads a digit string (AT between modalities, one map per "
    "output token); a single self-attention stream over [image features; text] with a prefix mask does the same "
    "job (SA across modalities once their activations are joined).",
    trains=list(READERS.values()),
)
def two_modalities(tour: Tour):
    rows, numbers, panels = [], {}, []
    for label, experiment in READERS.items():
        test = {"exact_reads": "exact_reads", "token_accuracy": "token_accuracy"}
        numbers[label], loaded = run_numbers(tour, experiment, test, {"best_dev_exact_reads": "exact_reads"})
        row = numbers[label]
        rows.append(
            [
                label,
                experiment,
                row["parameters"],
                round(100 * row["exact_reads"], 1),
                round(100 * row["token_accuracy"], 1),
                round(row["train_seconds"] or 0),
            ]
        )
        image, _ = _test_canvas(tour, experiment)
        maps = reader_token_maps(loaded.model, image)
        path, name = tour.figure(f"claim-5-{experiment}")
        overlay_maps(maps.image, maps.maps, maps.titles, path, title=maps.title)
        panels.append(Figure(name, f"{label}: where each output token looked on the canvas."))
    cross, single = (numbers[label]["exact_reads"] for label in READERS)
    verdict = Verdict.check(
        min(cross, single) >= 0.5,
        f"exact reads of test canvases: cross-attention reader {cross:.1%}, single-stream reader {single:.1%} "
        "(holds when both read at least half of the strings exactly)",
    )
    table = Table(
        "Digit strings on 12x64 canvases built from test-pool digits only (greedy reading)",
        ["reader", "experiment", "parameters", "exact reads %", "token accuracy %", "train s"],
        rows,
    )
    return verdict, [table], panels, numbers


@claim(
    13,
    "Self-attention helps a CNN where the receptive field is the bottleneck",
    "On a long-range task (name the digit an arrow points at, far across a wide canvas) a CNN with a global "
    "self-attention block (SAGAN, non-local or BoTNet, placed late at low resolution) beats a plain CNN of "
    "similar size; a ViT is the all-attention end.",
    trains=list(CANVAS.values()),
)
def cnn_blocks(tour: Tour):
    rows, numbers, accuracy = [], {}, {}
    for label, experiment in CANVAS.items():
        numbers[label], _ = run_numbers(tour, experiment, {"test_accuracy": "accuracy"})
        row = numbers[label]
        accuracy[label] = row["test_accuracy"]
        rows.append(
            [
                label,
                experiment,
                row["parameters"],
                round(row["test_accuracy"], 1),
                round(row["train_seconds"] or 0),
            ]
        )
    path, name = tour.figure("claim-13-accuracy")
    figures.bar_chart(
        accuracy,
        path,
        ylabel="test accuracy %",
        title="Pointer task: which digit does the arrow point at?",
        value_format="{:.1f}",
    )
    image, _ = _test_canvas(tour, "canvas-pointer-sagan")
    maps = pixel_attention_map(tour.model("canvas-pointer-sagan").model, image)
    map_path, map_name = tour.figure("claim-13-sagan-map")
    overlay_maps(maps.image, maps.maps, maps.titles, map_path, query=maps.query, title=maps.title)
    plain = accuracy["plain CNN"]
    best_label = max((label for label in CANVAS if label not in ("plain CNN", "ViT")), key=accuracy.get)
    size_ratio = numbers[best_label]["parameters"] / numbers["plain CNN"]["parameters"]
    verdict = Verdict.check(
        accuracy[best_label] > plain + 2.0,
        f"{best_label} {accuracy[best_label]:.1f}% vs plain CNN {plain:.1f}% test accuracy at "
        f"{size_ratio:.2f}x its parameters; ViT {accuracy['ViT']:.1f}% (one seed at this budget; RESULTS.md has "
        "the seed spread of the full budget)",
    )
    table = Table(
        "Pointer canvases (16x80) from test-pool digits; attention blocks after the last stage",
        ["model", "experiment", "parameters", "test accuracy %", "train s"],
        rows,
    )
    figures_out = [
        Figure(name, "Test accuracy per model on the long-range pointer task."),
        Figure(map_name, "What the SAGAN block's query pixel (marked) attends to across the canvas."),
    ]
    return verdict, [table], figures_out, numbers
