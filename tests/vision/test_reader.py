"""Cross-modal readers: shapes, teacher forcing == step-by-step decoding, maps as distributions, a tiny overfit."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from attnlab.data import digit_strings
from attnlab.seq.decode import beam_search, greedy
from attnlab.vision.reader import (
    BOS,
    EOS,
    PAD,
    VOCAB,
    CrossReader,
    SingleStreamReader,
    pixel_tokens,
    sinusoids_2d,
    strings,
    targets,
)

SMALL = {"dim": 16, "widths": (8, 16)}
READERS = {
    "cross": lambda **kw: CrossReader(**{**SMALL, **kw}),
    "cross-2heads-additive": lambda **kw: CrossReader(**{**SMALL, "heads": 2, "score": "additive", **kw}),
    "single": lambda **kw: SingleStreamReader(**{**SMALL, **kw}),
    "single-1head": lambda **kw: SingleStreamReader(**{**SMALL, "heads": 1, "layers": 1, **kw}),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models on a shared 2-core machine: two intra-op threads spin-wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def canvases():
    return digit_strings(6, "train", seed=5)


def _awake(model: torch.nn.Module) -> torch.nn.Module:
    """Random values for zero-initialized parameters (the modality embeddings), so nothing is trivially 0."""
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_(0.0, 0.5)
    return model


def test_tokens_round_trip(canvases):
    tgt_in, tgt_out = targets([[3, 1, 4], [1, 5]])
    assert tgt_in.tolist() == [[BOS, 6, 4, 7], [BOS, 4, 8, PAD]]
    assert tgt_out.tolist() == [[6, 4, 7, EOS], [4, 8, EOS, PAD]]
    assert strings(tgt_out) == [[3, 1, 4], [1, 5]]
    assert strings(torch.tensor([[6, BOS, EOS], [EOS, 6, 6]])) == [[3, -1], []]  # a stray BOS never reads true
    with pytest.raises(ValueError, match=r"labels\[0\] must hold digits"):
        targets([[10]])
    src, lengths = pixel_tokens(canvases.images)
    assert src.shape == (6, 12 * 64) and src.dtype == torch.long and lengths.tolist() == [12 * 64] * 6
    rebuilt = CrossReader(**SMALL).images_from_tokens(src, lengths)
    assert torch.equal(rebuilt, canvases.images)  # exact: canvases hold multiples of 1/16
    with pytest.raises(ValueError, match="multiples of 1/16"):
        pixel_tokens(canvases.images + 0.01)
    with pytest.raises(ValueError, match=r"src must be integer pixel levels \[B, 768\]"):
        CrossReader(**SMALL).encode(src[:, :100], torch.full((6,), 100))


def test_2d_positions_encode_row_then_column():
    grid = sinusoids_2d(3, 5, 8)  # (15, 8)
    assert grid.shape == (15, 8)
    rows, cols = grid.view(3, 5, 8)[..., :4], grid.view(3, 5, 8)[..., 4:]
    assert torch.equal(rows, rows[:, :1].expand(-1, 5, -1))  # the first half depends on the row only
    assert torch.equal(cols, cols[:1].expand(3, -1, -1))  # the second half on the column only
    one, two = torch.tensor(1.0), torch.tensor(2.0)
    torch.testing.assert_close(grid[2, :2], torch.tensor([0.0, 1.0]))  # row 0: sin 0, cos 0
    torch.testing.assert_close(grid[2, 4:6], torch.stack((two.sin(), two.cos())))  # column 2, lowest frequency
    torch.testing.assert_close(grid[6, :2], torch.stack((one.sin(), one.cos())))  # row 1


@pytest.mark.parametrize("name", sorted(READERS))
def test_shapes_sites_and_maps(name, canvases):
    model = _awake(READERS[name]()).eval()
    tgt_in, _ = targets(canvases.labels)
    logits = model(canvases.images, tgt_in)
    assert logits.shape == (6, tgt_in.shape[1], VOCAB)
    out = model(canvases.images, tgt_in, return_weights=True)
    torch.testing.assert_close(out.output, logits)
    sites = model.attention_sites()
    assert [site.name for site in sites] == list(out.weights)
    heads = model.heads
    for weights in out.weights.values():
        want = (6, heads, tgt_in.shape[1], 6, 32) if heads > 1 else (6, tgt_in.shape[1], 6, 32)
        assert weights.shape == want  # [B, (H,) T, Hs, Ws]: 12x64 canvases give a 6x32 grid
        assert (weights >= 0).all()
        mass = weights.sum(dim=(-2, -1))  # (B, (H,) T)
        if isinstance(model, CrossReader):
            assert {site.kind for site in sites} == {"cross"}
            torch.testing.assert_close(mass, torch.ones_like(mass))  # a distribution over the pixels
        else:
            assert {site.kind for site in sites} == {"self"}
            assert (mass <= 1 + 1e-6).all() and (mass > 0).all()  # the rest went to the text so far
    odd = model(torch.rand(2, 1, 13, 37), tgt_in[:2])  # any image size for teacher forcing
    assert odd.shape == (2, tgt_in.shape[1], VOCAB) and torch.isfinite(odd).all()


@pytest.mark.parametrize("name", sorted(READERS))
def test_teacher_forcing_equals_step_by_step(name, canvases):
    model = _awake(READERS[name]()).double().eval()
    images = canvases.images.double()
    tgt_in, _ = targets(canvases.labels)
    with torch.no_grad():
        forced = model(images, tgt_in).log_softmax(-1)  # (B, T, V)
        state = model.encode(*pixel_tokens(canvases.images))
        stepped = []
        for t in range(tgt_in.shape[1]):
            log_probs, state = model.step(state, tgt_in[:, t])
            stepped.append(log_probs)
    torch.testing.assert_close(torch.stack(stepped, dim=1), forced, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(READERS))
def test_greedy_and_beam_search_agree_with_teacher_forced_scores(name, canvases):
    model = _awake(READERS[name]()).double().eval()
    src, lengths = pixel_tokens(canvases.images)
    for decoded in (
        greedy(model, src, lengths, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=7),
        beam_search(model, src, lengths, bos_id=BOS, eos_id=EOS, pad_id=PAD, beam_size=3, max_len=7),
    ):
        tokens = decoded.tokens  # (B, T)
        tgt_in = torch.cat((torch.full((6, 1), BOS), tokens[:, :-1]), dim=1)
        with torch.no_grad():
            log_probs = model(canvases.images.double(), tgt_in).log_softmax(-1)  # (B, T, V)
        real = torch.arange(tokens.shape[1])[None] < decoded.lengths[:, None]  # (B, T)
        chosen = log_probs.gather(-1, tokens[..., None])[..., 0]  # (B, T)
        torch.testing.assert_close(
            (chosen * real).sum(1).float(), decoded.log_probs, rtol=1e-5, atol=1e-5
        )  # beam search's reorder followed the right rows


@pytest.mark.parametrize("name", ["cross", "single"])
def test_overfits_32_canvases_to_exact_reads(name):
    torch.manual_seed(0)
    data = digit_strings(32, "train", seed=3)
    tgt_in, tgt_out = targets(data.labels)
    src, lengths = pixel_tokens(data.images)
    model = READERS[name](dim=32, widths=(16, 32))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    start, reads = time.perf_counter(), []
    for step in range(400):
        model.train()
        loss = F.cross_entropy(model(data.images, tgt_in).flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 24:
            model.eval()
            reads = strings(greedy(model, src, lengths, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=7).tokens)
            if reads == data.labels:
                break
    assert reads == data.labels, f"after {step + 1} steps ({time.perf_counter() - start:.0f} s)"
