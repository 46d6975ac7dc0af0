"""Claim 12: attention is an expectation, ``context = E_p[V]``, under a distribution p over positions."""

from __future__ import annotations

import torch

from attnlab import CrossAttention, SelfAttention, masks
from attnlab.experiments.lab import GRID_SCORES
from attnlab.viz import figures

from ..evidence import Figure, Table, Verdict
from ..tour import Tour, claim

_OPTIONS = {"location": {"max_len": 16}}
TOLERANCE = 1e-5  # float32 round-off over a 12-position sum and two projections stays well below this
CONTENT_EFFECT = 1e-3  # a weight change above round-off: the score reads the keys' content


@claim(
    12,
    "Attention is an expectation",
    "Whatever the score, attention weights are a probability distribution over positions (each row sums to 1, "
    "masked positions get exactly 0) and the context is the expectation of the values under it. Location-based "
    "attention is a distribution over positions p(t|X) that ignores content; content scores are pairwise "
    "p(x_k|x_q).",
    criterion=f"Exact, every score: holds when every weight row sums to 1 within {TOLERANCE:g} (self- and "
    f"cross-attention), masked positions get exactly 0, the context equals E_p[V] recomputed from the weights within "
    f"{TOLERANCE:g}, location weights do not move at all when the keys' content changes and every content score's "
    f"weights move by more than {CONTENT_EFFECT:g}; otherwise it does not hold.",
)
@torch.no_grad()
def expectation(tour: Tour):
    generator = torch.Generator().manual_seed(tour.seed)
    dim, heads, length = 16, 2, 12
    x = torch.randn(3, length, dim, generator=generator)
    lengths = torch.tensor([length, 9, 5])
    padding = masks.padding(lengths, length)  # [B, 1, T]
    rows, numbers, panels, titles = [], {}, [], []
    worst_sum = worst_masked = worst_expectation = 0.0
    for score in GRID_SCORES:
        torch.manual_seed(tour.seed)
        layer = SelfAttention(dim, heads, score, score_options=_OPTIONS.get(score)).eval()
        out = layer(x, mask=padding, return_weights=True)
        weights = out.weights  # [B, H, T, T]
        row_sum = float((weights.sum(-1) - 1).abs().max())
        masked = float(weights.masked_select(~padding.unsqueeze(1).expand_as(weights)).abs().max())
        # E_p[V]: the weights times the projected values, recombined by the output projection.
        values = torch.nn.functional.linear(x, *layer.projection("value"))
        values = values.unflatten(-1, (heads, -1)).transpose(1, 2)  # [B, H, T, Dh]
        mixed = (weights @ values).transpose(1, 2).flatten(-2)  # [B, T, H*Dh]
        expected = torch.nn.functional.linear(mixed, *layer.projection("output"))  # [B, T, D]
        gap = float((expected - out.context).abs().max())
        # Content sensitivity: the same module called as attention, the same queries reading keys with other content
        # (another item's tokens) at the same positions under the same mask.
        reader = CrossAttention(dim, heads=heads, score=score, score_options=_OPTIONS.get(score)).eval()
        reader.load_state_dict(layer.state_dict())
        if not torch.equal(reader(x, context=x, mask=padding, return_weights=True).weights, weights):
            raise AssertionError(f"{score}: SelfAttention(x) differs from CrossAttention(x, context=x)")
        same = reader(x, context=x.clone(), mask=padding, return_weights=True).weights
        other = reader(x, context=x.roll(1, dims=0), mask=padding, return_weights=True).weights
        moved = float((other - same)[:, :, :5, :5].abs().max())  # the first 5 tokens are real in every item
        numbers[score] = {
            "max_row_sum_error": row_sum,
            "max_masked_weight": masked,
            "max_expectation_gap": gap,
            "weight_change_when_content_changes": moved,
        }
        worst_sum, worst_masked = max(worst_sum, row_sum), max(worst_masked, masked)
        worst_expectation = max(worst_expectation, gap)
        rows.append([score, f"{row_sum:.1e}", masked, f"{gap:.1e}", round(moved, 4)])
        panels.append(weights[2, 0].numpy())  # item with 5 real tokens, head 0
        titles.append(score)
    table = Table(
        "Self-attention with a padding mask (3 sequences of 12, 9 and 5 tokens), every score",
        [
            "score",
            "max |row sum - 1|",
            "max masked weight",
            "max |context - E_p[V]|",
            "max weight change when key content changes",
        ],
        rows,
    )
    path, name = tour.figure("claim-12-distributions")
    figures.attention_grid(
        panels,
        path,
        titles=titles,
        ncols=3,
        suptitle="Weights of a 5-token sequence padded to 12 (head 0): zero past the padding",
    )
    location = numbers["location"]["weight_change_when_content_changes"]
    content = min(numbers[s]["weight_change_when_content_changes"] for s in GRID_SCORES if s != "location")
    cross = CrossAttention(dim, heads=heads).eval()
    cross_sum = float((cross(x[:1, :4], context=x[1:2], return_weights=True).weights.sum(-1) - 1).abs().max())
    numbers["cross_attention_row_sum_error"] = cross_sum
    holds = (
        max(worst_sum, cross_sum) < TOLERANCE
        and worst_masked == 0.0
        and worst_expectation < TOLERANCE
        and location == 0.0
        and content > CONTENT_EFFECT
    )
    verdict = Verdict.check(
        holds,
        f"rows sum to 1 within {max(worst_sum, cross_sum):.1e} and masked weights are at most {worst_masked} for "
        f"every score; context equals E_p[V] within {worst_expectation:.1e}; changing the keys' content moves "
        f"location weights by {location:.1e} and content-score weights by at least {content:.3f}",
    )
    figure = Figure(
        name,
        "One padded sequence under each score: every row is a distribution over the 5 real "
        "positions and exactly zero over the 7 padding positions.",
    )
    return verdict, [table], [figure], numbers
