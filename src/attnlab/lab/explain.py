"""``attnlab explain WORD...``: the phonemes a G2P model reads off a word, and which letters each phoneme attended to.

How the weights are obtained. The word is decoded (greedy, or beam search), then the model runs once more with
teacher forcing on ``[BOS] + decoded tokens`` and ``return_weights=True``. Every model here is causal on the
target side, so in eval mode (no dropout) row ``t`` of that pass computes exactly what decoding step ``t``
computed: the weights are the ones the model used to emit each phoneme (up to float rounding between the fused
kernel used while decoding and the explicit path used to return weights). One pass gives every row at once.

Which weights. A model's attention sites come from ``attention_sites()``:

- encoder-decoder models (Transformer, RNN with Bahdanau / Luong attention, LSTMN encoder): the ``cross`` sites,
  ``[phonemes, letters]`` as they are; by default the last one (for the Transformer, the last decoder layer);
- the decoder-only model has no cross site: its decoder reads the letters through self-attention over
  ``[letters; SEP; BOS + phonemes]`` under a prefix mask. The block target rows x letter columns is its
  cross-attention equivalent. That block does not sum to 1 (the rest goes to SEP and earlier phonemes), so it
  is renormalised over the letters; ``source_mass`` keeps the share each row gave the letters before that;
- an ensemble (:class:`~attnlab.seq.Ensemble`, ``attnlab export --ensemble``): its members' cross sites, named
  ``members.I.SITE``; by default the last member's last one;
- an RNN without attention has nothing to explain: a ``ValueError`` says so.

Heads are averaged unless one ``head`` is asked for. Shapes: ``weights`` is ``[len(phonemes), len(letters)]``;
the EOS step is left out (``phonemes`` are the decoded symbols before EOS), so row ``i`` is the attention with
which phoneme ``i`` was produced. Rows sum to 1 over the letters (a row with no weight on any letter, possible
only for the decoder-only model, stays 0).

Status: complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attnlab.data import Vocab, collate_seq2seq, pad
from attnlab.experiments import G2PTask, load_model, resolve_model_path, task_from_spec
from attnlab.seq import DecoderOnlyTransformer, beam_search, greedy
from attnlab.viz import heatmap

__all__ = ["Explanation", "explain", "explain_words", "explainable_sites", "format_explanation", "save_figure"]


@dataclass(frozen=True, eq=False)
class Explanation:
    """One word explained: what the model said, and which letters it read to say each part of it."""

    word: str
    phonemes: list[str]  # decoded symbols, EOS excluded
    letters: list[str]
    weights: np.ndarray  # [len(phonemes), len(letters)] float64; rows sum to 1 (or 0, see the module doc)
    site: str  # the attention site the weights come from, e.g. "decoder.2.cross"
    head: int | None  # None: the mean over the site's heads
    heads: int  # how many heads the site has
    source_mass: np.ndarray  # [len(phonemes)]: each row's weight on the letters before renormalising (1 for cross)
    finished: bool  # EOS was produced (False: decoding stopped at its length limit)


def explainable_sites(model: nn.Module) -> list[str]:
    """Sites whose weights can be read as ``[phonemes, letters]``: the cross sites, or the decoder-only model's
    self-attention layers (their target x source block). In model order; the last is the default."""
    sites = model.attention_sites()
    if isinstance(model, DecoderOnlyTransformer):
        return [site.name for site in sites]
    return [site.name for site in sites if site.kind == "cross"]


def _check_words(words: Sequence[str], src_vocab: Vocab) -> list[str]:
    if isinstance(words, str) or not isinstance(words, Sequence) or not words:
        raise ValueError(f"words: expected a non-empty list of words, received {words!r:.80}")
    known = set(src_vocab.symbols)
    checked = []
    for word in words:
        if not isinstance(word, str):
            raise TypeError(f"words: expected str items, received {type(word).__name__} {word!r}")
        letters = word.strip().lower()
        if not letters:
            raise ValueError(f"words: expected non-empty words, received {word!r}")
        for char in letters:
            if char not in known:
                raise ValueError(
                    f"word {word!r}: character {char!r} is not one the model reads (it knows "
                    f"{''.join(sorted(known))!r})"
                )
        checked.append(letters)
    return checked


def _choose_site(model: nn.Module, site: str | None) -> str:
    names = explainable_sites(model)
    if not names:
        raise ValueError(
            f"the model ({type(model).__name__}) has no attention from phonemes to letters: without attention the "
            "decoder reads the word only through the encoder's final state, so there is nothing to explain; use a "
            "model trained with attention (e.g. g2p-bahdanau or g2p-transformer)"
        )
    if site is None:
        return names[-1]
    if site not in names:
        raise ValueError(f"site: expected one of {names}, received {site!r}")
    return site


def _decode_one(model: nn.Module, src: torch.Tensor, lengths: torch.Tensor, tgt_vocab: Vocab, beam: int):
    ids = {"bos_id": tgt_vocab.bos_id, "eos_id": tgt_vocab.eos_id, "pad_id": tgt_vocab.pad_id}
    if beam == 1:
        decoded = greedy(model, src, lengths, **ids)
    else:
        decoded = beam_search(model, src, lengths, beam_size=beam, **ids)
    tokens = decoded.tokens[0, : int(decoded.lengths[0])].tolist()
    finished = bool(decoded.finished[0])
    if finished:
        tokens = tokens[:-1]  # the EOS
    return tokens, finished


@torch.no_grad()
def explain_words(
    model: nn.Module,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    words: Sequence[str],
    *,
    beam: int = 1,
    site: str | None = None,
    head: int | None = None,
) -> list[Explanation]:
    """Explain ``words`` with a loaded sequence-to-sequence ``model`` (put in eval mode here) and its vocabularies.

    Raises:
        ValueError: a word with characters outside ``src_vocab`` (naming the word and the character), an unknown
            ``site``, a ``head`` out of range, a bad ``beam``, or a model without phoneme-to-letter attention.
    """
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise ValueError(f"beam: expected a positive int, received {beam!r}")
    words = _check_words(words, src_vocab)
    site = _choose_site(model, site)
    model.eval()
    device = next(model.parameters()).device
    results = []
    for word in words:
        letters = list(word)
        src, lengths = pad([src_vocab.encode(letters)], src_vocab.pad_id)  # (1, S), (1,)
        tokens, finished = _decode_one(model, src.to(device), lengths.to(device), tgt_vocab, beam)
        # Specials the model may emit mid-output (an untrained model can) are kept, so the pass below sees
        # exactly the decoded ids: "<bos>" re-encodes to the BOS id.
        phonemes = tgt_vocab.decode(tokens, strip_specials=False)
        batch = collate_seq2seq([(letters, phonemes)], src_vocab, tgt_vocab).to(device)  # tgt_in = BOS + phonemes
        weights = model(batch, return_weights=True).weights[site][0].float()  # (H, Tq, Tk)
        heads = weights.shape[0]
        if head is not None:
            if isinstance(head, bool) or not isinstance(head, int) or not 0 <= head < heads:
                raise ValueError(f"head: expected an int in [0, {heads}) for site {site!r}, received {head!r}")
            weights = weights[head]  # (Tq, Tk)
        else:
            weights = weights.mean(0)  # (Tq, Tk)
        n, s = len(phonemes), len(letters)
        if isinstance(model, DecoderOnlyTransformer):
            start = s + 1  # the stream is [letters (S); SEP; BOS + phonemes]: target rows start after SEP
            block = weights[start : start + n, :s]  # (n, S) target rows x letter columns
        else:
            block = weights[:n, :s]  # (n, S); row n (the EOS step) is left out
        block = block.double().cpu().numpy()
        mass = block.sum(-1)  # (n,)
        normalised = np.divide(block, mass[:, None], out=np.zeros_like(block), where=mass[:, None] > 0)
        results.append(Explanation(word, phonemes, letters, normalised, site, head, heads, mass, finished))
    return results


def explain(
    words: Sequence[str],
    model: str | Path | None = None,
    *,
    beam: int = 1,
    site: str | None = None,
    head: int | None = None,
    device: str = "cpu",
) -> list[Explanation]:
    """Explain ``words`` with the G2P model at ``model`` (a run directory or a ``.safetensors`` file; None: the
    shipped model, a clear ``FileNotFoundError`` when there is none yet). See :func:`explain_words`."""
    path = resolve_model_path(model)
    loaded = load_model(path, device=torch.device(device))
    task = task_from_spec(loaded.task)
    if not isinstance(task, G2PTask):
        raise ValueError(f"{path}: explain reads grapheme-to-phoneme models; this one was trained for {task.name!r}")
    return explain_words(loaded.model, task.src_vocab, task.tgt_vocab, words, beam=beam, site=site, head=head)


def _site_note(item: Explanation) -> str:
    reading = f"head {item.head} of {item.heads}" if item.head is not None else f"mean of {item.heads} heads"
    if item.heads == 1:
        reading = "1 head"
    note = f"{item.site}, {reading}"
    if not np.allclose(item.source_mass, 1.0):
        note += f"; {item.source_mass.mean():.0%} of the weight on letters, renormalised"
    return note


def format_explanation(item: Explanation, *, color: bool = True) -> str:
    """The word, its phonemes and the terminal heatmap (rows: phonemes, columns: letters)."""
    said = " ".join(item.phonemes) if item.phonemes else "(nothing)"
    lines = [f"{item.word}: {said}" + ("" if item.finished else "  [no EOS: stopped at the length limit]")]
    if not item.phonemes:
        lines.append("  no attention to show: the model ended the output at once")
        return "\n".join(lines)
    lines.append(f"  which letters each phoneme attended to ({_site_note(item)}):")
    lines.append(heatmap(item.weights, item.phonemes, item.letters, color=color, vmax=1.0, annotate=True))
    return "\n".join(lines)


def save_figure(items: Sequence[Explanation], path: str | Path) -> Path:
    """One PNG: the alignment of one word, or a grid with a panel per word."""
    from attnlab.viz import figures

    shown = [item for item in items if item.phonemes]
    if not shown:
        raise ValueError("nothing to draw: no word produced any phoneme")
    if len(shown) == 1:
        item = shown[0]
        return figures.alignment_heatmap(item.weights, item.letters, item.phonemes, path, vmax=1.0,
                                         title=f"{item.word}: {_site_note(item)}", xlabel="letters",
                                         ylabel="phonemes")  # fmt: skip
    return figures.attention_grid(
        [item.weights for item in shown],
        path,
        titles=[item.word for item in shown],
        x_labels=[item.letters for item in shown],
        y_labels=[item.phonemes for item in shown],
        suptitle=f"which letters each phoneme attended to ({_site_note(shown[0])})",
    )
