"""`attnlab inspect`: attention sites, counts, parameters and costs of models built on the meta device."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from attnlab import CrossAttention
from attnlab.cli import main
from attnlab.experiments import available_experiments
from attnlab.lab.inspect import attention_cost, available_models, build_model, inspect_model, module_cost
from attnlab.vision.reader import CrossReader

torch.set_num_threads(1)

ACCEPTANCE = {"transformer-base": (12, 6), "bert-base": (12, 0), "rnnsearch": (0, 1)}
BUILTINS = ["transformer-base", "bert-base", "rnnsearch", "cross-reader", "single-stream-reader"]


# -- acceptance: the standard configurations' counts -------------------------------------------------------------
@pytest.mark.parametrize(("name", "counts"), ACCEPTANCE.items())
def test_cli_json_counts_self_and_cross_sites(name, counts, capsys):
    assert main(["inspect", name, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # one JSON object
    assert report["model"] == name
    assert report["counts"] == {"self": counts[0], "cross": counts[1]}
    assert len(report["sites"]) == sum(counts)
    assert report["parameters"]["total"] > report["parameters"]["attention"] > 0
    for site in report["sites"]:
        assert {"name", "kind", "query_from", "keys_from", "heads", "score", "mask", "cost"} <= site.keys()


@pytest.mark.parametrize(("name", "counts"), ACCEPTANCE.items())
def test_function_counts_self_and_cross_sites(name, counts):
    assert inspect_model(name).counts == {"self": counts[0], "cross": counts[1]}


def test_sites_say_who_reads_whom():
    transformer = {site.name: site for site in inspect_model("transformer-base").sites}
    cross = transformer["decoder.3.cross"]
    assert cross.kind == "cross" and cross.keys_from == "encoder output (source)"
    assert cross.query_from == "decoder layer 3 (target, after self-attention)"
    assert transformer["decoder.3.self"].mask == "causal" and transformer["encoder.3.self"].mask == "padding"
    assert all(site.heads == 8 and site.score == "scaled_dot" for site in transformer.values())

    bert = inspect_model("bert-base").sites
    assert all(s.kind == "self" and s.query_from == s.keys_from and s.heads == 12 for s in bert)  # SA reads itself

    (attention,) = inspect_model("rnnsearch").sites
    assert (attention.name, attention.score, attention.heads) == ("decoder.cross", "additive", 1)
    assert "decoder state" in attention.query_from and attention.keys_from == "encoder states (bidirectional GRU)"


def test_human_readable_report(capsys):
    assert main(["inspect", "transformer-base", "--length", "64"]) == 0
    out = capsys.readouterr().out
    assert "attention sites: 12 self, 6 cross" in out
    assert "no weights allocated" in out and "parameters: 101,009,544 total" in out
    assert "decoder.5.cross" in out and "encoder output (source)" in out and "N = 64 " in out


# -- parameters, without allocating them -------------------------------------------------------------------------
def test_bert_base_parameters_match_an_independent_count():
    vocab, positions, d, ffn, layers, classes = 30522, 512, 768, 3072, 12, 2
    embeddings = vocab * d + positions * d + d  # tokens, learned positions, the [CLS] vector
    attention = 4 * d * d + 4 * d  # W_q, W_k, W_v, W_o with biases
    feed_forward = 2 * d * ffn + ffn + d
    layer_norms = 2 * 2 * d  # pre-LN before attention and before the FFN (scale and shift)
    total = embeddings + layers * (attention + feed_forward + layer_norms) + 2 * d + d * classes + classes
    report = inspect_model("bert-base")
    assert report.parameters == total == 108_892_418
    assert report.attention_parameters == layers * attention


def test_transformer_base_attention_parameters():
    d = 512
    report = inspect_model("transformer-base")
    assert report.attention_parameters == 18 * (4 * d * d + 4 * d)  # 6 + 6 self and 6 cross sites


@pytest.mark.parametrize("name", BUILTINS)
def test_no_weight_is_allocated(name):
    model, _, source = build_model(name)
    assert source == "built-in"
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and all(t.is_meta for t in tensors)


# -- the cost formulas -------------------------------------------------------------------------------------------
def test_attention_cost_by_hand():
    # Tq = 3, Tk = 5, H = 2, Dh = 4, Dv = 6
    dot = attention_cost(3, 5, 2, 4, 6, "dot", projection=7)
    assert dot.score_flops == 2 * 3 * 5 * 4 * 2 == 240  # QK^T: a multiply-add per feature, pair and head
    assert dot.weighted_sum_flops == 2 * 3 * 5 * 6 * 2 == 360
    assert dot.projection_flops == 7
    assert dot.weights_bytes == 4 * 2 * 3 * 5 == 120  # [1, H, Tq, Tk] float32
    assert (dot.path, dot.path_bytes) == ("sdpa", 4 * 2 * 3)  # one log-sum-exp per query row and head

    additive = attention_cost(3, 5, 2, 4, 6, "additive")  # A = 4
    assert additive.score_flops == 3 * 3 * 5 * 4 * 2 == 360  # W q + U k (add), v . tanh(...) (multiply-add)
    assert (additive.path, additive.path_bytes) == ("dense", 120)
    location = attention_cost(3, 5, 2, 4, 6, "location")
    assert location.score_flops == 0 and location.weighted_sum_flops == 360
    with pytest.raises(ValueError, match="family must be one of"):
        attention_cost(3, 5, 2, 4, 6, "bilinear")
    with pytest.raises(ValueError, match="queries must be an int >= 0"):
        attention_cost(-1, 5, 2, 4, 6)


@pytest.mark.parametrize(
    ("score", "project", "heads"),
    [("dot", True, 4), ("scaled_dot", True, 1), ("general", False, 2), ("cosine", True, 2), ("general", True, 2)],
)
def test_dot_family_costs_match_torch_flop_counter(score, project, heads):
    """An independent count: torch's FlopCounterMode over a real module's dense path (matmuls only)."""
    module = CrossAttention(16, 24, heads, score, project=project)
    x, context = torch.randn(1, 5, 16), torch.randn(1, 7, 24)
    with FlopCounterMode(display=False) as counter:
        module(x, context, return_weights=True)  # the dense path: QK^T and PV are visible matmuls
    cost = module_cost(module, 5, 7)
    assert cost.score_flops + cost.weighted_sum_flops + cost.projection_flops == counter.get_total_flops()


def test_additive_cost_adds_what_the_flop_counter_ignores():
    module = CrossAttention(16, 24, 2, "additive", project=False)  # A = 8 per head
    with FlopCounterMode(display=False) as counter:
        module(torch.randn(1, 5, 16), torch.randn(1, 7, 24))
    cost = module_cost(module, 5, 7)
    additions = 5 * 7 * 8 * 2  # W q_i + U k_j: elementwise, not a matmul
    assert cost.score_flops + cost.weighted_sum_flops + cost.projection_flops == counter.get_total_flops() + additions


def test_site_costs_at_a_length():
    n = 128
    (bert,) = {site.cost for site in inspect_model("bert-base", length=n).sites}  # 12 identical layers
    t, d, h = n + 1, 768, 12  # [CLS] + tokens
    assert (bert.queries, bert.keys) == (t, t)
    assert bert.score_flops == bert.weighted_sum_flops == 2 * t * t * (d // h) * h
    assert bert.projection_flops == 2 * t * 4 * d * d

    (rnn,) = inspect_model("rnnsearch", length=n).sites
    a, annotations = 1000, 2000  # additive hidden size; values are the raw bidirectional states
    assert rnn.cost.score_flops == 3 * n * n * a
    assert rnn.cost.weighted_sum_flops == 2 * n * n * annotations
    assert rnn.cost.projection_flops == 2 * (n * 1000 * a + n * annotations * a)  # W s_(i-1), U h_j
    assert rnn.cost.path == "dense" and rnn.cost.path_bytes == rnn.cost.weights_bytes == 4 * n * n


def test_stream_lengths_follow_the_model():
    n = 10
    decoder_only = inspect_model("g2p-decoder-only", length=n, budget="smoke")
    assert {(s.cost.queries, s.cost.keys) for s in decoder_only.sites} == {(2 * n + 1, 2 * n + 1)}  # [src; SEP; tgt]
    grid = CrossReader().encoder(torch.zeros(1, 1, 12, 64))[1]  # a real forward pass: (Hs, Ws)
    (reader,) = inspect_model("cross-reader", length=n).sites
    assert (reader.cost.queries, reader.cost.keys) == (n, grid[0] * grid[1])
    single = inspect_model("single-stream-reader", length=n).sites
    assert {s.cost.queries for s in single} == {grid[0] * grid[1] + n}
    lstmn = {s.name: s.cost for s in inspect_model("g2p-lstmn", length=n).sites}
    hidden = 128  # quick budget; the tape's values are [h_i; c_i]
    assert lstmn["encoder.0.forward"].weighted_sum_flops == 2 * n * n * 2 * hidden


# -- every experiment --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", available_experiments())
def test_every_experiment_inspects(name, capsys):
    report = inspect_model(name, length=16)
    assert report.counts["self"] + report.counts["cross"] <= len(report.sites) == sum(report.counts.values())
    assert report.parameters > 0 and report.source == f"experiment {name}, budget quick"
    model, _, _ = build_model(name)
    assert all(p.is_meta for p in model.parameters())
    json.dumps(report.to_json())  # plain data
    assert main(["inspect", name, "--budget", "smoke", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == name


# -- names and errors --------------------------------------------------------------------------------------------
def test_list_names_builtins_and_experiments(capsys):
    assert main(["inspect", "--list"]) == 0
    out = capsys.readouterr().out
    for name in [*BUILTINS, *available_experiments()]:
        assert f"{name} " in out
    assert list(available_models())[: len(BUILTINS)] == BUILTINS


def test_unknown_name_is_one_line_listing_the_names(capsys):
    assert main(["inspect", "no-such-model"]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert captured.out == "" and len(err) == 1
    assert err[0].startswith("attnlab inspect: error: unknown model 'no-such-model'; available: transformer-base")
    assert "bert-base" in err[0] and "rnnsearch" in err[0] and available_experiments()[0] in err[0]
    assert main(["inspect"]) == 1
    assert "expected a MODEL name or --list" in capsys.readouterr().err
    assert main(["inspect", "bert-base", "--length", "0"]) == 1
    assert "length must be a positive int; received 0" in capsys.readouterr().err
