"""Claim 4, on real text: a G2P Transformer's self-attention models dependencies inside the word, its attention
(cross) aligns the phonemes it writes with the letters it reads.

The model is the shipped G2P model when it is a Transformer, or its Transformer member when it is an ensemble
(quick and full budgets). Otherwise a g2p-transformer is trained here: the quick budget's model for the first 500
of its steps (about a minute; its alignments are already monotone although its transcriptions are not yet good),
the full budget's whole schedule, or at the smoke budget a few steps (whose maps are noise: the verdict then says
so).
"""

from __future__ import annotations

import numpy as np
import torch

from attnlab.data import collate_seq2seq
from attnlab.experiments import (
    SHIPPED_G2P_MODEL,
    G2PTask,
    LoadedModel,
    load_model,
    model_spec,
    parameter_count,
    task_from_spec,
)
from attnlab.experiments.tasks import evenly_spaced
from attnlab.seq import Ensemble, Transformer
from attnlab.train.checkpoint import load_metadata
from attnlab.viz import figures

from ..evidence import Figure, Table, Verdict
from ..explain import explain_words
from ..tour import Tour, claim
from ._common import diagonality

WORDS = {"smoke": 30, "quick": 200, "full": 1000}  # test words measured
SHOWN = "pronunciation"


QUICK_STEPS = 500  # of the quick budget's 1,500: enough for the alignments, when no model is shipped
MONOTONE = 0.8  # share of phoneme steps that must not move backwards: English spelling is read left to right, with
# a few reorderings ('x' -> K S, silent letters) that a learned alignment may jump over


def _shipped_transformer() -> tuple[LoadedModel, str] | None:
    """The shipped G2P model if it is a Transformer, or its Transformer member if it is an ensemble (with a phrase
    naming it); None when there is no such model."""
    if not SHIPPED_G2P_MODEL.is_file():
        return None
    loaded = load_model(SHIPPED_G2P_MODEL)
    if isinstance(loaded.model, Transformer):
        return loaded, "the shipped G2P model"
    members = loaded.model.members if isinstance(loaded.model, Ensemble) else []
    transformer = next((member for member in members if isinstance(member, Transformer)), None)
    if transformer is None:
        return None
    metadata = {**loaded.metadata, "model": model_spec(transformer), "parameters": parameter_count(transformer),
                "experiment": "g2p-transformer"}  # fmt: skip
    return LoadedModel(transformer, metadata, loaded.path), "the Transformer of the shipped G2P ensemble"


def _shipped_model_class() -> str | None:
    """The shipped file's model class, read from its header alone (no weights loaded)."""
    if not SHIPPED_G2P_MODEL.is_file():
        return None
    model = load_metadata(SHIPPED_G2P_MODEL).get("model")
    if not isinstance(model, dict):
        return None
    if model.get("class") == "Ensemble":
        classes = {member.get("class") for member in model.get("config", {}).get("members", [])}
        return "Ensemble" if "Transformer" in classes else None
    return model.get("class")


def _g2p_trainings(tour: Tour) -> list[tuple[str, int | None]]:
    if tour.budget != "smoke" and _shipped_model_class() in ("Transformer", "Ensemble"):
        return []
    return [("g2p-transformer", QUICK_STEPS if tour.budget == "quick" else None)]


def _g2p_model(tour: Tour) -> tuple[LoadedModel, str]:
    trainings = _g2p_trainings(tour)
    if not trainings:
        shipped = _shipped_transformer()
        if shipped is None:
            raise RuntimeError(f"{SHIPPED_G2P_MODEL} changed while the tour ran: it no longer holds a Transformer")
        return shipped
    ((experiment, steps),) = trainings
    if steps is not None:
        return tour.model(experiment, max_steps=steps), f"{experiment} after {steps} steps of the quick budget"
    return tour.model(experiment), f"{experiment} trained at the {tour.budget} budget"


@torch.no_grad()
def _encoder_self(loaded: LoadedModel, task: G2PTask, word: str) -> tuple[str, np.ndarray]:
    """The last encoder self-attention layer's weights over the word's letters, mean over heads."""
    batch = collate_seq2seq([(list(word), ["AH0"])], task.src_vocab, task.tgt_vocab)
    weights = loaded.model(batch, return_weights=True).weights
    name = sorted(n for n in weights if n.startswith("encoder.") and n.endswith(".self"))[-1]
    return name, weights[name][0].mean(0).float().numpy()


def _locality(weights: np.ndarray, radius: int = 1) -> float:
    """Share of each row's weight within ``radius`` positions of the query, averaged over rows."""
    rows, cols = weights.shape
    near = np.abs(np.arange(rows)[:, None] - np.arange(cols)[None]) <= radius
    return float((weights * near).sum() / max(weights.sum(), 1e-12))


@claim(
    4,
    "Self-attention relates positions of one sequence; attention relates two sequences",
    "In a G2P Transformer, encoder self-attention connects letters of the same word to each other (context such as "
    "'ph' or a silent 'e'), while cross-attention connects each phoneme being written to the letters it comes "
    "from: an alignment between two sequences that advances monotonically through the word.",
    criterion=f"Holds when, over the test words, cross-attention's most-attended letter does not move backwards at "
    f"{MONOTONE:.0%} or more of phoneme steps (an alignment that advances through the word) and encoder "
    "self-attention puts more of a letter's weight on itself and its neighbours (+-1) than uniform attention over "
    "the word would (it relates letters by position inside the word); otherwise it does not hold. Inconclusive "
    "when the model writes fewer than 2 phonemes per word (nothing to align).",
    trains=_g2p_trainings,
)
def within_and_between(tour: Tour):
    loaded, which = _g2p_model(tour)
    task = task_from_spec(loaded.task)
    words = [word for word, _ in evenly_spaced(task.entries("test"), WORDS[tour.budget])]
    explained = explain_words(loaded.model, task.src_vocab, task.tgt_vocab, words)
    monotone, local, uniform, lengths = [], [], [], []
    for item in explained:
        if len(item.phonemes) < 2:
            continue
        monotone.append(diagonality(item.weights))
        _, self_weights = _encoder_self(loaded, task, item.word)
        local.append(_locality(self_weights))
        n = len(item.word)
        uniform.append(float((np.abs(np.arange(n)[:, None] - np.arange(n)[None]) <= 1).sum() / n**2))
        lengths.append(n)
    candidates = [item for item in explained if len(item.phonemes) >= 2]
    shown = next((item for item in candidates if item.word == SHOWN), None)
    if shown is None:
        extra = explain_words(loaded.model, task.src_vocab, task.tgt_vocab, [SHOWN])[0]
        shown = extra if len(extra.phonemes) >= 2 else (candidates[0] if candidates else extra)
    site, self_weights = _encoder_self(loaded, task, shown.word)
    panels = [self_weights]
    titles, x_labels, y_labels = [f"{site} (SA): letters read letters"], [list(shown.word)], [list(shown.word)]
    if shown.phonemes:  # a barely trained model may end its output at once: then there is no alignment to draw
        panels.append(shown.weights)
        titles.append(f"{shown.site} (AT): phonemes read letters")
        x_labels.append(list(shown.word))
        y_labels.append(shown.phonemes)
    path, name = tour.figure("claim-4-self-vs-cross")
    figures.attention_grid(panels, path, titles=titles, x_labels=x_labels, y_labels=y_labels, shared_scale=False)
    numbers = {
        "model": which,
        "words": len(monotone),
        "cross_monotone_steps": float(np.mean(monotone)) if monotone else float("nan"),
        "self_weight_within_1": float(np.mean(local)) if local else float("nan"),
        "uniform_weight_within_1": float(np.mean(uniform)) if uniform else float("nan"),
        "example": {"word": shown.word, "phonemes": shown.phonemes},
    }
    table = Table(
        f"{len(monotone)} test words, {which}",
        ["measure", "value"],
        [
            ["AT: phoneme steps whose most-attended letter does not move backwards", numbers["cross_monotone_steps"]],
            ["SA: share of a letter's attention on itself and its neighbours (+-1)", numbers["self_weight_within_1"]],
            ["the same share if attention were uniform over the word", numbers["uniform_weight_within_1"]],
        ],
    )
    if not monotone:
        verdict = Verdict.inconclusive(
            f"{which} wrote fewer than 2 phonemes for each of the {len(explained)} test words: no alignment to measure",
            "a trained model: the quick budget (the shipped G2P model, or `attnlab tour --claims 4`)",
        )
    else:
        holds = (
            numbers["cross_monotone_steps"] >= MONOTONE
            and numbers["self_weight_within_1"] > numbers["uniform_weight_within_1"]
        )
        verdict = Verdict.check(
            holds,
            f"with {which}: cross-attention moves forward through the letters at "
            f"{numbers['cross_monotone_steps']:.0%} of phoneme steps (holds at {MONOTONE:.0%}), and self-attention "
            "puts "
            f"{numbers['self_weight_within_1']:.0%} of its weight on a letter's neighbourhood against "
            f"{numbers['uniform_weight_within_1']:.0%} if uniform",
        )
    figure = Figure(
        name,
        f"'{shown.word}' -> {' '.join(shown.phonemes)}. Left: letters attending to letters inside the word (SA). "
        "Right: each phoneme attending to the letters it is written from (AT), a monotone alignment.",
    )
    return verdict, [table], [figure], numbers
