"""``attnlab inspect MODEL``: every attention site of a model, what it costs, and no weights allocated.

For each site (a place where ``context = E_p[V]`` is computed, see :class:`attnlab.seq.base.Site`): self or
cross, where the queries come from, where the keys/values come from, heads, score, mask; the number of self and
cross sites; the parameters (total, and inside attention modules); and the attention FLOPs and memory of one
forward pass at a given length. Models are built under ``torch.device("meta")``: parameters have shapes and no
storage, so BERT-base (109M parameters) inspects in milliseconds and nothing is trained or loaded.

Models: the built-ins below (the literature's standard configurations, DESIGN claims 1-3) and every registered
experiment's model at a chosen budget (:mod:`attnlab.experiments`). Building a G2P experiment's model needs its
vocabularies, which come from the whole CMU dictionary (parsed once, about a second); reversal tasks need no data.

Cost model (batch 1, one forward pass, dense counts: a causal or history mask could skip about half the pairs):

    score FLOPs         dot family (dot, scaled_dot, general, cosine): 2 * Tq * Tk * Dh * H
                        additive v^T tanh(Wq + Uk):                    3 * Tq * Tk * A * H   (add + multiply-add)
                        location (logits from the query alone):        0 (its W_a q is a projection)
    weighted sum FLOPs  2 * Tq * Tk * Dv * H
    projection FLOPs    2 * rows * in * out per matrix: W_q, W_o and the score's query-side matrices on Tq rows,
                        W_k, W_v and the additive U on Tk rows (biases, softmax, exp and tanh not counted)
    weights memory      4 * H * Tq * Tk bytes: the [1, H, Tq, Tk] float32 weights, when materialized (asked for,
                        or a score that SDPA cannot express: additive, location keep these logits)
    fused path keeps    4 * H * Tq bytes: SDPA (flash) keeps one log-sum-exp per query row, no Tq x Tk matrix

``Dh``/``Dv`` are the per-head key and value widths, ``A`` the additive score's hidden size. Lengths: ``N``
source and ``N`` target tokens; a layer's stream can be longer: ``N + 1`` with a [CLS] token, ``2N + 1`` for a
decoder-only model over ``[source; SEP; target]``, ``Hs*Ws + N`` for the single-stream image reader, whose
cross-attention counterpart reads the ``Hs*Ws`` grid (fixed by its image size); a ViT's stream is its patch grid
(+ class token), whatever ``N``. Widths come from the modules themselves: the k-th site of ``attention_sites()``
is the k-th CrossAttention/SelfAttention module in registration order (checked by count and heads; a mismatch
leaves the costs out with a warning).

Status: complete for sequence models and the two image readers; vision blocks (SE, CBAM, non-local...) list their
sites, but their cost is not modelled (``cost`` is None with a warning).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from attnlab.attention import CrossAttention
from attnlab.scores import Additive
from attnlab.seq import (
    DecoderOnlyTransformer,
    EncoderConfig,
    LearnedPositions,
    LSTMNLayer,
    RNNConfig,
    RNNSeq2Seq,
    Site,
    Transformer,
    TransformerClassifier,
    TransformerConfig,
)
from attnlab.vision.base import AttentionSite, VisionBlock
from attnlab.vision.reader import CrossReader, SingleStreamReader
from attnlab.vision.vit import ViTEncoder

__all__ = [
    "AttentionCost",
    "Inspection",
    "SiteReport",
    "attention_cost",
    "available_models",
    "build_model",
    "builtin",
    "format_inspection",
    "inspect_model",
    "inspect_module",
    "module_cost",
    "projection_flops",
]

FLOAT32_BYTES = 4
SCORE_FAMILIES = ("dot", "additive", "location")


# -- the formulas ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionCost:
    """One site's attention work at batch 1 (see the module docstring for the formulas)."""

    queries: int  # Tq
    keys: int  # Tk
    score_flops: int
    weighted_sum_flops: int
    projection_flops: int
    weights_bytes: int  # the [1, H, Tq, Tk] float32 weights, materialized
    path: str  # "sdpa" (fused) | "dense" (explicit logits) on the training path, weights not asked for
    path_bytes: int  # what that path keeps per call instead of (or as) the weights


def attention_cost(
    queries: int,
    keys: int,
    heads: int,
    score_dim: int,
    value_dim: int,
    family: str = "dot",
    projection: int = 0,
) -> AttentionCost:
    """The attention FLOPs and memory of ``heads`` heads, ``queries`` x ``keys`` pairs, at batch 1.

    ``score_dim`` is ``Dh`` (dot family: the prepared query/key width per head) or ``A`` (additive hidden size),
    ignored for ``"location"``; ``value_dim`` is ``Dv`` per head; ``projection`` the projection FLOPs, counted
    apart (:func:`projection_flops`).
    """
    dims = (("queries", queries), ("keys", keys), ("heads", heads), ("score_dim", score_dim), ("value_dim", value_dim))
    for name, value in dims:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be an int >= 0; received {value!r}")
    if family not in SCORE_FAMILIES:
        raise ValueError(f"family must be one of {SCORE_FAMILIES}; received {family!r}")
    pairs = queries * keys * heads
    per_pair = {"dot": 2 * score_dim, "additive": 3 * score_dim, "location": 0}[family]
    weights_bytes = FLOAT32_BYTES * pairs
    fused = family == "dot"
    return AttentionCost(
        queries=queries,
        keys=keys,
        score_flops=pairs * per_pair,
        weighted_sum_flops=2 * pairs * value_dim,
        projection_flops=projection,
        weights_bytes=weights_bytes,
        path="sdpa" if fused else "dense",
        path_bytes=FLOAT32_BYTES * heads * queries if fused else weights_bytes,
    )


def projection_flops(module: CrossAttention, queries: int, keys: int) -> int:
    """``2 * rows * in * out`` over the module's matrices: W_q, W_o and the score's query side on ``queries`` rows,
    W_k, W_v and the additive score's key side ``U`` on ``keys`` rows."""
    flops = 0
    for which, rows in (("query", queries), ("key", keys), ("value", keys), ("output", queries)):
        weight = module.projection(which)
        if weight is not None:
            flops += 2 * rows * weight[0].numel()
    for name, parameter in module.score.named_parameters():
        if parameter.dim() == 3:  # per-head matrices [H, in, out]: additive W/U, general W, location W_a
            flops += 2 * (keys if name == "key_weight" else queries) * parameter.numel()
    return flops


# -- reports -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SiteReport:
    """A site as :class:`~attnlab.seq.base.Site` describes it, with its cost at the inspected length."""

    name: str
    kind: str
    query_from: str
    keys_from: str
    heads: int | None
    score: str
    mask: str
    cost: AttentionCost | None


@dataclass(frozen=True)
class Inspection:
    """What ``attnlab inspect`` reports about one model (plain data; :meth:`to_json` for the ``--json`` output)."""

    model: str
    description: str
    model_class: str
    source: str
    parameters: int
    attention_parameters: int
    length: int
    sites: list[SiteReport]
    warnings: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """``{"self": S, "cross": C}`` (and any other kind a vision block declares, e.g. ``"channel"``)."""
        counts = {"self": 0, "cross": 0}
        for site in self.sites:
            counts[site.kind] = counts.get(site.kind, 0) + 1
        return counts

    def totals(self) -> dict[str, int]:
        keys = ("score_flops", "weighted_sum_flops", "projection_flops", "weights_bytes", "path_bytes")
        costs = [site.cost for site in self.sites if site.cost is not None]
        return {key: sum(getattr(cost, key) for cost in costs) for key in keys}

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "description": self.description,
            "class": self.model_class,
            "source": self.source,
            "counts": self.counts,
            "parameters": {"total": self.parameters, "attention": self.attention_parameters},
            "length": self.length,
            "sites": [dataclasses.asdict(site) for site in self.sites],
            "totals": self.totals(),
            "warnings": list(self.warnings),
        }


# -- built-in models ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Builtin:
    description: str
    build: Callable[[], nn.Module]


_BUILTINS: dict[str, _Builtin] = {}


def builtin(name: str, description: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Register ``build() -> model`` as a built-in model of ``attnlab inspect`` (called on the meta device)."""

    def register(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        if name in _BUILTINS:
            raise ValueError(f"built-in model {name!r} is already registered")
        _BUILTINS[name] = _Builtin(description, build)
        return build

    return register


@builtin(
    "transformer-base",
    "Vaswani et al. 2017 base: 6 + 6 layers, d=512, 8 heads, FFN 2048, vocabulary 37000 (ours: pre-LN, separate "
    "source/target embeddings and output layer, untied, hence ~101M parameters against the paper's 65M)",
)
def _transformer_base() -> nn.Module:
    return Transformer(TransformerConfig.base(src_vocab=37000, tgt_vocab=37000))


@builtin(
    "bert-base",
    "Devlin et al. 2018 BERT-base encoder: 12 layers, d=768, 12 heads, FFN 3072, vocabulary 30522, 512 learned "
    "positions, a 2-class head on [CLS] (ours: pre-LN, no token types, no pooler)",
)
def _bert_base() -> nn.Module:
    return TransformerClassifier(EncoderConfig.bert_base(vocab=30522, num_classes=2))


@builtin(
    "rnnsearch",
    "Bahdanau et al. 2014 RNNsearch: bidirectional GRU encoder and GRU decoder of 1000 units, embeddings 620, "
    "vocabularies 30000, one additive cross-attention (ours: tanh readout for maxout)",
)
def _rnnsearch() -> nn.Module:
    return RNNSeq2Seq(RNNConfig.rnnsearch(src_vocab=30000, tgt_vocab=30000))


@builtin(
    "cross-reader",
    "Image-to-text reader (Show, Attend and Tell style): a GRU decoder's cross-attention over CNN features of a "
    "12x64 digit canvas (the lab's defaults: d=64, one head)",
)
def _cross_reader() -> nn.Module:
    return CrossReader()


@builtin(
    "single-stream-reader",
    "Image-to-text reader as one self-attention stream [image features; text] with a prefix mask (the lab's "
    "defaults: d=64, 2 layers, 2 heads, 12x64 canvas)",
)
def _single_stream_reader() -> nn.Module:
    return SingleStreamReader()


def _experiments() -> Mapping[str, Any]:
    from attnlab.experiments import experiment_table  # imported only when asked: it loads the training stack

    return experiment_table()


def available_models(*, experiments: bool = True) -> dict[str, str]:
    """Model names ``attnlab inspect`` knows, with descriptions: the built-ins, then every experiment's model."""
    names = {name: entry.description for name, entry in _BUILTINS.items()}
    if experiments:
        names.update({name: f"experiment: {exp.description}" for name, exp in _experiments().items()})
    return names


# -- building on the meta device ---------------------------------------------------------------------------------
class _SkipRandomInit(TorchFunctionMode):
    """Skips random initialisation of meta tensors, which hold no values: torch's meta ``normal_`` imports
    ``torch._dynamo`` and its meta ``randn`` imports sympy the first time (seconds on a busy machine), which would
    dominate inspecting BERT. Anything that is not on the meta device runs unchanged."""

    IN_PLACE = (nn.init.normal_, Tensor.normal_)
    FACTORIES = (torch.randn, torch.rand)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.IN_PLACE:
            tensor = args[0] if args else kwargs.get("tensor")  # nn.init.normal_ passes it by keyword
            if isinstance(tensor, Tensor) and tensor.is_meta:
                return tensor
        elif func in self.FACTORIES:
            empty = torch.empty(*args, **{k: v for k, v in kwargs.items() if k != "generator"})
            if empty.is_meta:
                return empty
        return func(*args, **kwargs)


def build_model(name: str, *, budget: str = "quick") -> tuple[nn.Module, str, str]:
    """``(model on the meta device, description, source)`` for a built-in or an experiment name.

    ``budget`` picks an experiment's model size (ignored for built-ins). An unknown name raises ``KeyError``
    listing every available name.
    """
    if name in _BUILTINS:
        entry, source = _BUILTINS[name], "built-in"
        with torch.device("meta"), _SkipRandomInit():
            return entry.build(), entry.description, source
    table = _experiments()
    if name not in table:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    experiment = table[name]
    plan = experiment.budget(budget)
    task = experiment.make_task(**plan.data)  # vocabularies only: no training data is drawn or read
    with torch.device("meta"), _SkipRandomInit():
        model = experiment.make_model(task, **plan.model)
    return model, experiment.description, f"experiment {name}, budget {budget}"


# -- inspecting a model ------------------------------------------------------------------------------------------
def _attention_modules(model: nn.Module) -> list[nn.Module]:
    """Modules whose parameters belong to attention: every CrossAttention/SelfAttention and vision block."""
    found: dict[str, nn.Module] = {}  # outermost only: a vision block may own a CrossAttention
    for path, module in model.named_modules():
        inside = any(path.startswith(f"{outer}.") for outer in found)
        if isinstance(module, CrossAttention | VisionBlock) and not inside:
            found[path] = module
    return list(found.values())


def _value_widths(model: nn.Module) -> dict[int, int]:
    """Attention modules whose values are wider than their context features: the LSTMN reads ``[h_i; c_i]``."""
    return {id(layer.attention): 2 * layer.hidden for layer in model.modules() if isinstance(layer, LSTMNLayer)}


def _grid_size(reader: nn.Module) -> int:
    """Feature positions ``Hs*Ws`` a reader's CNN gives for its image size, from its convolutions' geometry (a meta
    forward pass would work too, but torch's meta batch norm and ReLU import ``torch._dynamo``: seconds)."""
    height, width = reader.image_size
    for conv in _main_path_convs(reader.encoder.cnn):
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
        height = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
        width = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return height * width


def _main_path_convs(module: nn.Module) -> list[nn.Conv2d]:
    """The convolutions along a CNN's main path, in order (a residual block's ``shortcut`` runs beside it)."""
    if isinstance(module, nn.Conv2d):
        return [module]
    return [conv for name, child in module.named_children() if name != "shortcut" for conv in _main_path_convs(child)]


def _lengths(model: nn.Module, n: int) -> tuple[int, int]:
    """``(Tq, Tk)`` of a site when the model reads ``n`` source and ``n`` target tokens."""
    if isinstance(model, DecoderOnlyTransformer):
        return 2 * n + 1, 2 * n + 1  # [source; SEP; target]
    if isinstance(model, TransformerClassifier) and model.config.pooling == "cls":
        return n + 1, n + 1  # [CLS] + tokens
    if isinstance(model, SingleStreamReader):
        stream = _grid_size(model) + n
        return stream, stream
    if isinstance(model, CrossReader):
        return n, _grid_size(model)
    vit = next((m for m in model.modules() if isinstance(m, ViTEncoder)), None)
    if vit is not None:  # patches of its image size (+ the class token), whatever n says
        tokens = vit.grid[0] * vit.grid[1] + (vit.class_token is not None)
        return tokens, tokens
    return n, n


def _family(score: nn.Module) -> str | None:
    if getattr(score, "is_dot", False):
        return "dot"
    if isinstance(score, Additive):
        return "additive"
    if not getattr(score, "uses_keys", True):
        return "location"
    return None


def module_cost(
    module: CrossAttention, queries: int, keys: int, value_width: int | None = None
) -> AttentionCost | None:
    """:func:`attention_cost` of one CrossAttention/SelfAttention module at ``queries`` x ``keys``, its widths read
    from the module (``value_width`` overrides the value width when values bypass it); None for a score whose cost
    is not modelled."""
    score = module.score
    family = _family(score)
    if family is None:
        return None
    score_dim = {"dot": score.key_dim or 0, "additive": getattr(score, "hidden_dim", 0), "location": 0}[family]
    if value_width is None:
        value_width = module.inner if module.out_proj is not None else module.context_dim
    return attention_cost(queries, keys, module.heads, score_dim, value_width // module.heads, family,
                          projection_flops(module, queries, keys))  # fmt: skip


def _as_report(site: Site | AttentionSite) -> SiteReport:
    if isinstance(site, Site):
        return SiteReport(site.name, site.kind, site.query_from, site.keys_from, site.heads, site.score, site.mask,
                          None)  # fmt: skip
    if isinstance(site, AttentionSite):  # vision: no heads or mask declared (heads come from the module)
        return SiteReport(site.name, site.kind, site.query, site.key, None, site.mechanism, "-", None)
    raise TypeError(f"attention_sites() must return Site or AttentionSite records; received {type(site).__name__}")


def inspect_module(
    model: nn.Module, *, name: str, description: str = "", source: str = "", length: int = 128
) -> Inspection:
    """Inspect a built model (meta or not) that has ``attention_sites()``; costs at ``length`` tokens."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int; received {length!r}")
    if not callable(getattr(model, "attention_sites", None)):
        raise TypeError(f"{type(model).__name__} has no attention_sites(): it cannot be inspected")
    sites = [_as_report(site) for site in model.attention_sites()]
    modules = _attention_modules(model)
    attention_parameters = sum(p.numel() for module in modules for p in module.parameters())
    warnings: list[str] = []
    attends = [m for m in modules if isinstance(m, CrossAttention)]
    paired = len(attends) == len(sites) and all(
        site.heads in (None, module.heads) for site, module in zip(sites, attends, strict=False)
    )
    if sites and not attends:
        warnings.append("costs not modelled: these sites are vision blocks, not CrossAttention/SelfAttention modules")
    elif not paired:
        warnings.append(f"costs not modelled: {len(sites)} sites but {len(attends)} CrossAttention/SelfAttention "
                        "modules to match them with")  # fmt: skip
    else:
        widths = _value_widths(model)
        for i, (site, module) in enumerate(zip(sites, attends, strict=True)):
            queries, keys = _lengths(model, length)
            cost = module_cost(module, queries, keys, widths.get(id(module)))
            if cost is None:
                warnings.append(f"{site.name}: cost of score {type(module.score).__name__} is not modelled")
            limit = getattr(module.score, "max_len", None)
            if limit is not None and keys > limit:
                warnings.append(f"{site.name}: {keys} keys exceed the location score's max_len {limit}")
            sites[i] = dataclasses.replace(site, heads=module.heads, cost=cost)
    longest = max((site.cost.queries for site in sites if site.cost is not None), default=0)
    for module in model.modules():
        if isinstance(module, LearnedPositions) and longest > module.max_len:
            warnings.append(f"a stream of {longest} positions exceeds the learned positions' max_len {module.max_len}")
            break
    return Inspection(
        model=name,
        description=description,
        model_class=type(model).__name__,
        source=source,
        parameters=sum(p.numel() for p in model.parameters()),
        attention_parameters=attention_parameters,
        length=length,
        sites=sites,
        warnings=warnings,
    )


def inspect_model(name: str, *, length: int = 128, budget: str = "quick") -> Inspection:
    """Build ``name`` (a built-in or an experiment) on the meta device and inspect it at ``length`` tokens."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive int; received {length!r}")
    model, description, source = build_model(name, budget=budget)
    return inspect_module(model, name=name, description=description, source=source, length=length)


# -- the human-readable report -----------------------------------------------------------------------------------
def _si(value: int) -> str:
    for unit, scale in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return str(value)


def _bytes(value: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value} B"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in
                         enumerate(zip(row, widths, strict=True))).rstrip()
        for row in [header, *rows]
    ]  # fmt: skip


def format_inspection(report: Inspection) -> str:
    """The text ``attnlab inspect`` prints: sites, counts, parameters, then costs."""
    counts = report.counts
    share = 100.0 * report.attention_parameters / max(1, report.parameters)
    lines = [
        f"{report.model}: {report.description}",
        f"  {report.model_class} ({report.source}), built on the meta device: no weights allocated",
        f"  parameters: {report.parameters:,} total, {report.attention_parameters:,} in attention modules "
        f"({share:.1f}%)",
        "  attention sites: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()),
        "",
    ]
    rows = [[s.name, s.kind, "-" if s.heads is None else str(s.heads), s.score, s.mask, s.query_from, s.keys_from]
            for s in report.sites]  # fmt: skip
    header = ["site", "kind", "heads", "score", "mask", "queries from", "keys/values from"]
    lines += _table(header, rows, {2}) if rows else ["  (no attention sites)"]
    costed = [s for s in report.sites if s.cost is not None]
    if costed:
        lines += ["", f"  one forward pass, batch 1, float32, N = {report.length} (Tq, Tk: what each site reads at N):"]
        rows = [
            [s.name, str(s.cost.queries), str(s.cost.keys), _si(s.cost.score_flops), _si(s.cost.weighted_sum_flops),
             _si(s.cost.projection_flops), _bytes(s.cost.weights_bytes), s.cost.path, _bytes(s.cost.path_bytes)]
            for s in costed
        ]  # fmt: skip
        totals = report.totals()
        rows.append(["total", "", "", *(_si(totals[k]) for k in ("score_flops", "weighted_sum_flops",
                                                                  "projection_flops")),
                     _bytes(totals["weights_bytes"]), "", _bytes(totals["path_bytes"])])  # fmt: skip
        header = ["site", "Tq", "Tk", "score FLOPs", "sum FLOPs", "proj FLOPs", "weights", "path", "path keeps"]
        lines += _table(header, rows, {1, 2, 3, 4, 5, 6, 8})
        lines += [
            "",
            "  score 2*Tq*Tk*Dh*H (dot family), 3*Tq*Tk*A*H (additive), 0 (location); weighted sum 2*Tq*Tk*Dv*H;",
            "  projections 2*rows*in*out per matrix; weights 4*H*Tq*Tk bytes if materialized; the fused SDPA path",
            "  keeps 4*H*Tq bytes (one log-sum-exp per query row); causal masks are counted dense.",
        ]
    lines += [f"  warning: {w}" for w in report.warnings]
    return "\n".join(lines)
