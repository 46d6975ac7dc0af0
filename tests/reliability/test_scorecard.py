"""The reliability scorecard (RELIABILITY.md, "Scorecard"): every exported attention module x dtype x mask pattern x
awkward shape, checked against independent float64 references (the checks are listed in scorecard.py).

- CPU tier (default suite): a covering design of the grid; every module and every pair of factor values (kind,
  score, heads, dtype, mask pattern, B, Tq, Tk, features) at least once. One test per case; the run ends with the
  scorecard line.
- Full grid (``python3 -m pytest -m slow tests/reliability/test_scorecard.py``): every case of the cartesian grid,
  one test per module x dtype x mask pattern.
- The oracles are checked against the per-pair loop oracle of tests/reference.py, and the checks against a
  library broken on purpose (each must notice).
"""

from __future__ import annotations

import itertools
import math

import pytest
import scorecard as sc
import torch

import attnlab
import attnlab.core
from attnlab import CrossAttention, SelfAttention, masks
from reference import reference_attend, reference_attend_einsum, reference_module, reference_module_einsum

CPU_CASES = sc.cpu_tier()


class _ScorecardReport:
    """Prints the scorecard line(s) at the end of the run (a plugin registered by the fixture below: a conftest.py
    in tests/reliability would shadow tests/conftest.py, which tests/test_core.py imports as ``conftest``)."""

    def pytest_terminal_summary(self, terminalreporter) -> None:
        lines = sc.TALLY.lines()
        if lines:
            terminalreporter.section("reliability scorecard")
            for line in lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def _report_scorecard(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("attnlab-scorecard"):
        manager.register(_ScorecardReport(), "attnlab-scorecard")


def _fail_message(result: sc.Result) -> str:
    return f"{result.case}:\n  " + "\n  ".join(result.failures())


# -- the CPU tier -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CPU_CASES, ids=str)
def test_cpu_tier(case):
    result = sc.run_case(case, "CPU tier")
    assert not result.failures(), _fail_message(result)


def test_cpu_tier_covers_the_grid():
    """Every required tuple of each family's covering design is in the CPU tier: every module, and every pair of
    factor values (so every kind and every score with every dtype and every mask pattern; shapes included)."""
    for name, design in sc.cpu_design().items():
        space = sc.SPACES[name]
        covered = {t for values in design for t in sc.covered_tuples(space, values)}
        missing = [t for t in sc.required_tuples(space) if t not in covered]
        assert not missing, f"{name}: {len(missing)} tuples not covered, e.g. {missing[:3]}"
        assert all(space.valid(*(v[n] for n in space.constrained)) for v in design), f"{name}: an invalid case"
    modules = {c.module for c in CPU_CASES}
    assert len(modules) == len(sc.KINDS) * len(sc.SCORES) * len(sc.HEADS) + len(sc.VISION_BLOCKS) + 3
    assert {c.dtype for c in CPU_CASES} == set(sc.DTYPES) and {c.mask for c in CPU_CASES} == set(sc.MASKS)
    assert {(c.batch, c.tq) for c in CPU_CASES if c.tq == 3} == {(3, 3)}  # the B == T shape


# -- the full grid (-m slow) -------------------------------------------------------------------------------------
def pytest_generate_tests(metafunc):
    """The full grid is parametrized only when slow tests are selected (``-m slow``): pyproject's addopts do not
    deselect ``slow``, and 3928 groups of ~160 cases each would otherwise be collected into every run."""
    if "group" not in metafunc.fixturenames:
        return
    if "slow" in (metafunc.config.option.markexpr or ""):
        groups = sc.full_groups()
        metafunc.parametrize("group", groups, ids=["|".join(g[1:]) for g in groups])
    else:
        skip = pytest.mark.skip(reason="the full scorecard grid runs with -m slow (RELIABILITY.md, Scorecard)")
        metafunc.parametrize("group", [pytest.param(None, marks=skip)], ids=["full-grid"])


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a group is up to ~250 cases; the largest take seconds each
def test_full_grid(group):
    failures = []
    for case in sc.group_cases(group):
        try:
            result = sc.run_case(case, "full grid")
        except Exception as error:  # recorded by run_case; keep going so one group reports all its cases
            failures.append(f"{case}: crash: {type(error).__name__}: {error}")
            continue
        if result.failures():
            failures.append(_fail_message(result))
    assert not failures, f"{len(failures)} failing cases:\n" + "\n".join(failures[:50])


# -- the oracles against the per-pair loops -----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "heads"), itertools.product(sc.SCORES, sc.HEADS))
def test_einsum_oracle_equals_the_loop_oracle(name, heads):
    gen = torch.Generator().manual_seed(7)
    key_dim = 5 if name in ("general", "additive", "location") else 4
    score = attnlab.get_score(
        name, query_dim=4, key_dim=key_dim, heads=heads, **({"max_len": 8} if name == "location" else {})
    ).double()
    sc.wake(score)
    q = torch.randn(2, heads, 3, 4, generator=gen, dtype=torch.float64)
    k = torch.randn(2, heads, 5, key_dim, generator=gen, dtype=torch.float64)
    v = torch.randn(2, heads, 5, 2, generator=gen, dtype=torch.float64)
    mask = torch.rand(2, heads, 3, 5, generator=gen) < 0.6
    mask[0, 0, 1] = False  # a row with nothing to attend to
    bias = torch.randn(2, heads, 3, 5, generator=gen, dtype=torch.float64)
    bias[1, -1, 2, :2] = -math.inf
    for m, b in ((None, None), (mask, None), (None, bias), (mask, bias)):
        want_context, want_weights = reference_attend(q, k, v, score, m, b)
        context, weights = reference_attend_einsum(q, k, v, score, m, b)
        torch.testing.assert_close(context, want_context, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(weights, want_weights, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sc.SCORES)
def test_module_einsum_oracle_equals_the_loop_oracle(name):
    options = {"max_len": 8} if name == "location" else {}
    cross = sc.wake(CrossAttention(6, 5, 3, name, head_dim=2, score_options=options)).double()
    own = sc.wake(SelfAttention(6, 3, name, head_dim=2, score_options=options)).double()
    x, memory = torch.randn(2, 4, 6, dtype=torch.float64), torch.randn(2, 5, 5, dtype=torch.float64)
    padding = masks.padding([5, 3], 5)
    allowed = padding[:, None]  # (B, 1, 1, Tk)
    want, want_weights = reference_module(cross, x, memory, padding)
    got, weights = reference_module_einsum(cross, x, memory, allowed)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weights, want_weights, rtol=1e-12, atol=1e-12)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    want, _ = reference_module(own, x, x, padding)
    got, _ = reference_module_einsum(own, x, x, allowed, self_attention=True)
    valid = padding[:, 0]  # the loop oracle does not zero padded queries; real tokens agree
    torch.testing.assert_close(got[valid], want[valid], rtol=1e-12, atol=1e-12)


# -- the checks notice a broken library ----------------------------------------------------------------------------
def _case(module: str, dtype: str, mask: str, shape=(3, 7, 7, 8)) -> sc.Case:
    return sc.Case("attention", module, dtype, mask, *shape)


def _run_unrecorded(case: sc.Case) -> sc.Result:
    result = sc.Result(case)
    with sc.one_thread():
        sc.RUNNERS[case.family](case, result)
    return result


def test_checks_notice_a_softmax_that_averages_empty_rows(monkeypatch):
    monkeypatch.setattr(
        attnlab.core, "masked_softmax", lambda logits, mask=None: logits.masked_fill(~mask, -1e30).softmax(-1)
    )
    result = _run_unrecorded(_case("attend-cross/additive/h3", "float64", "full_row"))
    assert any("fully masked rows" in m or "disallowed" in m for m in result.mismatch), result.failures()


def test_checks_notice_a_softmax_that_gives_nan_for_empty_rows(monkeypatch):
    def plain(logits, mask=None):
        return logits.softmax(-1) if mask is None else logits.masked_fill(~mask, -math.inf).softmax(-1)

    monkeypatch.setattr(attnlab.core, "masked_softmax", plain)
    result = _run_unrecorded(_case("CrossAttention/general/h1", "float32", "empty_item"))
    assert result.nan, result.failures()


def test_checks_notice_a_nan_query_turned_into_zero(monkeypatch):
    monkeypatch.setattr(attnlab.core, "_propagate_nan", lambda query, nan_keys, attn_mask, causal, context: context)
    result = _run_unrecorded(_case("attend-cross/scaled_dot/h1", "float32", "none"))
    assert any("NaN query" in m for m in result.mismatch), result.failures()


def test_checks_notice_start_aligned_causal_masks(monkeypatch):
    def start_aligned(tq, tk=None, *, device=None):  # SDPA's is_causal convention, not attnlab's
        tk = tq if tk is None else tk
        return torch.arange(tk, device=device)[None, :] <= torch.arange(tq, device=device)[:, None]

    monkeypatch.setattr(attnlab.core.masks, "causal", start_aligned)
    result = _run_unrecorded(_case("attend-cross/dot/h3", "float64", "causal_rect", (1, 3, 7, 4)))
    assert any("output" in m for m in result.mismatch), result.failures()


def test_checks_notice_imprecise_weights_in_half_precision(monkeypatch):
    """Weights rounded to 1/64 on the weights path: finite and summing to about 1, but past 2x the naive
    bfloat16 error."""
    exact_softmax = attnlab.core.masked_softmax
    monkeypatch.setattr(
        attnlab.core, "masked_softmax", lambda logits, mask=None: torch.round(exact_softmax(logits, mask) * 64) / 64
    )
    result = _run_unrecorded(_case("attend-cross/additive/h3", "bfloat16", "random", (3, 7, 33, 8)))
    assert any("weights path" in m and "naive bfloat16" in m for m in result.mismatch), result.failures()


# -- library bugs the scorecard found, fixed: regression tests ---------------------------------------------------
def test_nan_in_keys_that_a_neg_inf_bias_hides_from_every_query_does_not_leak():
    q = torch.randn(1, 2, 4, requires_grad=True)
    k, v = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    bias = torch.zeros(1, 2, 3)
    bias[..., 2] = -math.inf  # no query may read key 2: "-inf entries mask like False"
    poisoned_k, poisoned_v = k.clone(), v.clone()
    poisoned_k[0, 2], poisoned_v[0, 2] = float("nan"), float("nan")
    for weights in (False, True):
        base = attnlab.attend(q, k, v, bias=bias, return_weights=weights).context
        out = attnlab.attend(q, poisoned_k, poisoned_v, bias=bias, return_weights=weights).context
        assert torch.equal(out, base)
        (grad,) = torch.autograd.grad(out.sum(), q)
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("weights", [False, True])
def test_cosine_score_in_float16_survives_zero_padding(weights):
    score = attnlab.get_score("cosine", query_dim=4, key_dim=4).half()
    q = torch.randn(1, 2, 4).half().requires_grad_()
    k, v = torch.randn(1, 3, 4).half(), torch.randn(1, 3, 4).half()
    out = attnlab.attend(q, k, v, score, masks.padding([2], 3), return_weights=weights).context
    (grad,) = torch.autograd.grad(out.float().sum(), q)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("call", [{}, {"causal": True}, {"mask": "rows"}, {"bias": "rows"}])
def test_a_nan_key_reaches_exactly_the_rows_that_read_it_on_both_paths(call):
    # Was a bug of the fused path: SDPA's CPU kernel returned 0 for a row whose only readable key is NaN, and a
    # masked NaN key reached rows that mask it.
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    allowed = (masks.causal(5) if call.get("causal") else torch.rand(2, 5, 5) > 0.5).expand(2, 5, 5).clone()
    allowed[..., 0] = True  # every row reads something; row 0 reads only key 0 under the causal mask
    if "mask" in call:
        call = {"mask": allowed}
    elif "bias" in call:
        call = {"bias": torch.randn(2, 5, 5).masked_fill(~allowed, -math.inf)}
    elif not call:
        allowed = torch.ones(2, 5, 5, dtype=torch.bool)
    poisoned = k.clone()
    poisoned[0, 0] = float("nan")
    for weights in (False, True):
        base = attnlab.attend(q, k, v, "dot", return_weights=weights, **call).context
        out = attnlab.attend(q, poisoned, v, "dot", return_weights=weights, **call).context
        reads = allowed[0, :, 0]  # (Tq,): rows of item 0 that read key 0
        assert out[0, reads].isnan().all()
        assert torch.equal(out[0, ~reads], base[0, ~reads]) and torch.equal(out[1], base[1])


def test_checks_notice_a_masked_nan_key_reaching_rows_that_mask_it(monkeypatch):
    monkeypatch.setattr(attnlab.core, "_set_nan_keys_aside", lambda key, restricted: (key, key.isnan().any(-1)))
    noticed = []
    for seed in range(6):  # the poisoned key is drawn per case: some draw one that every row reads
        result = _run_unrecorded(_case("attend-cross/dot/h3", "float32", "random", (3, 7, 9, 8 + seed)))
        noticed += [m for m in result.mismatch if "rows that mask a NaN key" in m]
    assert noticed
