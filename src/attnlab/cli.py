"""The ``attnlab`` command.

``attnlab tour`` answers "is attention different from self-attention?" with a short, measured demonstration on
the library itself: one mechanism, called two ways, with every score function. (The full lab, with training on
CMUdict and digit canvases, grows on this entry point.)
"""

from __future__ import annotations

import argparse
import sys

import torch

from . import CrossAttention, SelfAttention, available_scores, masks
from .scores import score_class

SCORE_OPTIONS = {"location": {"max_len": 64}}
SCORES = ["dot", "scaled_dot", "general", "additive", "cosine", "location"]


@torch.no_grad()
def _tour(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    dim, heads = 32, 4
    text = torch.randn(2, 7, dim)  # a decoder's states: 7 tokens
    image = torch.randn(2, 49, 48)  # another component's activations: 7x7 CNN features, 48 channels
    lengths = torch.tensor([7, 5])

    print("attnlab tour: attention and self-attention are one mechanism, context = E_p[V].\n")
    print(f"Registered scores: {', '.join(available_scores())}\n")
    print("1. The same module, called two ways (shared parameters):")
    self_attn = SelfAttention(dim, heads)
    cross = CrossAttention(dim, heads=heads)
    cross.load_state_dict(self_attn.state_dict())
    same = torch.equal(self_attn(text).context, cross(text, context=text).context)
    print(f"   SelfAttention(x) == CrossAttention(x, context=x): {same}\n")

    print("2. Every score as attention (text reads image features) and as self-attention (text reads itself):")
    header = f"   {'score':<11} {'cross path':<10} {'self path':<9} {'min row sum':>11} {'max masked weight':>17}"
    print(header)
    padding = masks.padding(lengths, 7)
    for name in SCORES:
        options = SCORE_OPTIONS.get(name)
        reader = CrossAttention(dim, 48, heads, name, score_options=options)
        encoder = SelfAttention(dim, heads, name, causal=True, score_options=options)
        at = reader(text, context=image, return_weights=True)
        sa = encoder(text, mask=padding, return_weights=True)
        sums = torch.cat([at.weights.sum(-1).flatten(), sa.weights.sum(-1)[0].flatten()])  # every row of both
        masked = sa.weights[1][..., 5:].abs().max()  # item 1 has 5 tokens: keys 5, 6 are padding
        print(
            f"   {name:<11} {reader(text, context=image).path:<10} {encoder(text, mask=padding).path:<9} "
            f"{float(sums.min()):>11.6f} {float(masked):>17.1f}"
        )
    print(
        "\n   Attention weights are a distribution (sum 1); masked keys get exactly 0. Dot-family scores run "
        "through\n   PyTorch's fused SDPA kernel; additive and location build explicit [B, H, Tq, Tk] logits.\n"
    )
    print("3. Where each score comes from:")
    for name in SCORES:
        doc = (score_class(name).__doc__ or "").strip().splitlines()[0]
        print(f"   {name:<11} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlab", description="Attention vs self-attention: library and lab.")
    sub = parser.add_subparsers(dest="command", required=True)
    tour = sub.add_parser("tour", help="demonstrate attention vs self-attention with numbers")
    tour.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tour.set_defaults(run=_tour)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # output piped into a reader that stopped early (| head): not an error of ours
        sys.stderr.close()
        return 0
    except (ValueError, TypeError, KeyError, OSError) as error:
        print(f"attnlab {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
