"""Shared fixtures: deterministic seeds and builders for every registered score."""

from __future__ import annotations

import pytest
import torch

import attnlab

# Options each parameterised score needs beyond its dims.
SCORE_OPTIONS = {"location": {"max_len": 40}}
SCORES = ["dot", "scaled_dot", "general", "additive", "cosine", "location"]


def build_score(name: str, query_dim: int, key_dim: int, heads: int = 1, dtype=torch.float64):
    if name in ("dot", "scaled_dot", "cosine") and query_dim != key_dim:
        key_dim = query_dim
    score = attnlab.get_score(name, query_dim=query_dim, key_dim=key_dim, heads=heads, **SCORE_OPTIONS.get(name, {}))
    return score.to(dtype)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(1234)
    yield


@pytest.fixture(scope="session")
def smoke_tour(tmp_path_factory):
    """``attnlab tour --budget smoke`` run once per test session: (output directory, results.json content)."""
    from attnlab.lab.tour import run_tour

    out = tmp_path_factory.mktemp("tour") / "smoke"
    results = run_tour(out, budget="smoke", progress=False, log=lambda line: None)
    return out, results


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only when asked for (``-m slow``); the default suite skips them."""
    if "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: runs with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
