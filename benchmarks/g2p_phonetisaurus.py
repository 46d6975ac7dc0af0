"""G2P baseline: Phonetisaurus (joint-sequence n-gram WFST) trained and scored on attnlab's CMUdict split.

Tool: the ``phonetisaurus`` PyPI wheel (rhasspy's packaging of Phonetisaurus, ``pip install -e '.[bench]'``). It
ships prebuilt x86_64 binaries under ``phonetisaurus/bin/<machine>`` (``phonetisaurus-align``,
``phonetisaurus-arpa2wfst``, ``phonetisaurus-g2pfst``, mitlm's ``estimate-ngram``, the OpenFst tools) and their
shared libraries (OpenFst, mitlm, libgfortran) under ``phonetisaurus/lib/<machine>``; nothing else is needed. This
script calls those binaries directly, with exactly the commands that the bundled ``phonetisaurus-train`` wrapper
runs for the recipe Phonetisaurus documents for CMUdict (``phonetisaurus-train --lexicon cmudict.formatted.dict
--seq2_del``), so each stage can be timed:

1. ``phonetisaurus-align --seq1_del=false --seq2_del=true --seq1_max=2 --seq2_max=2 --grow=false`` (EM alignment,
   11 iterations by default): letters may map to nothing, every phoneme needs a letter, chunks of up to 2 letters
   and 2 phonemes;
2. ``estimate-ngram -o ORDER`` (mitlm, modified Kneser-Ney; the recipe's order is 8) on the aligned corpus;
3. ``phonetisaurus-arpa2wfst`` (ARPA to WFST);

then ``phonetisaurus-g2pfst --nbest=1 --beam=10000 --thresh=99`` (``phonetisaurus-apply``'s defaults) on every test
word. Training data: every pronunciation of every train word, one ``word<TAB>phonemes`` line each, phonemes with
their stress digits (``AH0``), so stress is part of each phoneme symbol and the output can be scored both ways.

Scores: :func:`attnlab.train.metrics.g2p_scores` on the test split against all reference pronunciations of each
word: WER and PER, with stress and with stress stripped on both sides. A word the decoder gives no output for
counts as an empty hypothesis (reported as ``no_output``). With ``--nbest K`` (K > 1; off by default: on the
full split a 5-best decode took about 8x as long as the 1-best one) a second decode asks for the K best hypotheses
per word and reports oracle scores under ``nbest`` (for each word, the hypothesis closest to a reference).

Timings are wall-clock seconds of the tool's processes (``*_seconds``) and their CPU seconds (``*_cpu_seconds``,
user + system of the child processes; on the full split each stage's CPU time stayed below its wall time, so they
use one core). On a shared machine wall time exceeds CPU time: run under ``nice`` and report both.

Usage: ``python -m benchmarks.g2p_phonetisaurus [--out DIR] [--limit N] [--limit-test M] [--order N] [--nbest K]``.
``--limit`` keeps N train words (evenly spaced over the sorted split) and, unless ``--limit-test`` says otherwise,
N test words: for smoke tests only. Prints one JSON line and writes it to ``DIR/phonetisaurus.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from attnlab.data.g2p import load_split, strip_stress
from attnlab.train.metrics import g2p_scores

INSTALL_HINT = "phonetisaurus is not installed: pip install -e '.[bench]' (or pip install phonetisaurus)"
DEFAULT_ORDER = 8  # Phonetisaurus' CMUdict recipe (phonetisaurus-train's default)
ALIGN_OPTIONS = ("--seq1_del=false", "--seq2_del=true", "--seq1_max=2", "--seq2_max=2", "--grow=false")
DECODE_OPTIONS = ("--beam=10000", "--thresh=99")
RESERVED = re.compile(r"[}|_\s]")  # Phonetisaurus' separators ('}', '|', '_') and whitespace

Pron = tuple[str, ...]
Entries = list[tuple[str, list[Pron]]]


class Tool:
    """Paths to the binaries of the installed ``phonetisaurus`` wheel and the environment to run them in."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("phonetisaurus")
        if spec is None or spec.origin is None:
            raise SystemExit(INSTALL_HINT)
        package = Path(spec.origin).parent
        machine = platform.machine()
        self.bin = package / "bin" / machine
        lib = package / "lib" / machine
        if not (self.bin / "phonetisaurus-align").is_file():
            raise SystemExit(f"phonetisaurus has no binaries for machine {machine!r} under {self.bin}")
        self.version = importlib.metadata.version("phonetisaurus")
        self.env = dict(os.environ)
        self.env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH")]))
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            self.env[name] = "1"

    def run(self, name: str, *args: str, cwd: Path, stdout_path: Path | None = None) -> tuple[float, float]:
        """Run one binary; returns (wall seconds, CPU seconds of the child). Raises with its stderr on failure."""
        command = [str(self.bin / name), *args]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        stdout = open(stdout_path, "w") if stdout_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            result = subprocess.run(command, cwd=cwd, env=self.env, stdout=stdout, stderr=subprocess.PIPE, text=True)
        finally:
            if stdout_path:
                stdout.close()
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-20:])
            raise RuntimeError(f"{' '.join(command)} exited with {result.returncode}:\n{tail}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return wall, cpu


def evenly_spaced(items: list, n: int | None) -> list:
    """``n`` items spread over ``items`` (all of them when ``n`` is None or not smaller)."""
    if n is None or n >= len(items):
        return list(items)
    if n < 1:
        raise ValueError(f"limit: expected at least 1, received {n}")
    return [items[i * len(items) // n] for i in range(n)]


def check_symbols(entries: Entries) -> None:
    for word, prons in entries:
        for symbol in [word, *(p for pron in prons for p in pron)]:
            if RESERVED.search(symbol) or not symbol:
                raise ValueError(f"{word!r}: symbol {symbol!r} is empty or uses a character reserved by Phonetisaurus")


def write_lexicon(path: Path, entries: Entries) -> int:
    """``word<TAB>P1 P2 ...``, one line per pronunciation; returns the number of lines."""
    lines = [f"{word}\t{' '.join(pron)}\n" for word, prons in entries for pron in prons]
    path.write_text("".join(lines))
    return len(lines)


def train(tool: Tool, lexicon: Path, work: Path, order: int) -> tuple[Path, dict[str, float]]:
    corpus, arpa, model = work / "model.corpus", work / f"model.o{order}.arpa", work / "model.fst"
    seconds: dict[str, float] = {}
    cpu = 0.0
    for stage, name, args in [
        (
            "align",
            "phonetisaurus-align",
            [f"--input={lexicon}", f"--ofile={corpus}", f"--tmpdir={work}", *ALIGN_OPTIONS],
        ),
        ("ngram", "estimate-ngram", ["-o", str(order), "-t", str(corpus), "-wl", str(arpa)]),
        ("arpa2wfst", "phonetisaurus-arpa2wfst", [f"--lm={arpa}", f"--ofile={model}"]),
    ]:
        seconds[stage], stage_cpu = tool.run(name, *args, cwd=work)
        cpu += stage_cpu
    timings = {"train_seconds": sum(seconds.values()), "train_cpu_seconds": cpu}
    timings.update({f"{stage}_seconds": value for stage, value in seconds.items()})
    return model, timings


def decode(tool: Tool, model: Path, words: Sequence[str], work: Path, nbest: int) -> tuple[dict, float, float]:
    """``{word: [pron, ...]}`` (best first, empty when the decoder gave nothing), wall and CPU seconds."""
    word_list, output = work / f"words.{nbest}.txt", work / f"hyps.{nbest}.txt"
    word_list.write_text("".join(f"{word}\n" for word in words))
    args = [f"--model={model}", f"--wordlist={word_list}", f"--nbest={nbest}", *DECODE_OPTIONS]
    wall, cpu = tool.run("phonetisaurus-g2pfst", *args, cwd=work, stdout_path=output)
    hyps: dict[str, list[Pron]] = {word: [] for word in words}
    for line in output.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] in hyps and parts[2].strip():
            hyps[parts[0]].append(tuple(parts[2].split()))
    return hyps, wall, cpu


def closest(candidates: Sequence[Pron], refs: Sequence[Pron], stress: bool) -> Pron:
    """The candidate nearest (edit distance) to any reference; the first on ties; empty if there is none."""
    if not candidates:
        return ()

    def norm(pron: Pron) -> Pron:
        return tuple(pron) if stress else strip_stress(pron)

    normed_refs = [norm(ref) for ref in refs]
    return min(candidates, key=lambda hyp: min(Levenshtein.distance(norm(hyp), ref) for ref in normed_refs))


def scores(hyps: Sequence[Pron], refs: Sequence[Sequence[Pron]]) -> dict[str, float]:
    stressed, plain = g2p_scores(hyps, refs, stress=True), g2p_scores(hyps, refs, stress=False)
    return {
        "wer": stressed["wer"],
        "per": stressed["per"],
        "wer_no_stress": plain["wer"],
        "per_no_stress": plain["per"],
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return re.search(r"model name\s*:\s*(.*)", info.read()).group(1)
    except (OSError, AttributeError):
        return platform.processor()


def run_benchmark(
    order: int = DEFAULT_ORDER, limit: int | None = None, limit_test: int | None = None, nbest: int = 1
) -> dict:
    tool = Tool()
    train_entries = evenly_spaced(load_split("train"), limit)
    test_entries = evenly_spaced(load_split("test"), limit_test if limit_test is not None else limit)
    check_symbols(train_entries)
    check_symbols(test_entries)
    words = [word for word, _ in test_entries]
    refs = [prons for _, prons in test_entries]
    result: dict = {
        "model": "phonetisaurus",
        "version": tool.version,
        "order": order,
        "align_options": " ".join(ALIGN_OPTIONS),
        "decode_options": " ".join(DECODE_OPTIONS),
        "train_words": len(train_entries),
        "test_words": len(test_entries),
        "test_prons": sum(len(prons) for prons in refs),
    }
    with tempfile.TemporaryDirectory(prefix="g2p_phonetisaurus_") as tmp:
        work = Path(tmp)
        lexicon = work / "train.lex"
        result["train_prons"] = write_lexicon(lexicon, train_entries)
        model, timings = train(tool, lexicon, work, order)
        result.update(timings)
        result["model_bytes"] = model.stat().st_size
        best, result["decode_seconds"], result["decode_cpu_seconds"] = decode(tool, model, words, work, 1)
        hyps = [best[word][0] if best[word] else () for word in words]
        result["no_output"] = sum(not best[word] for word in words)
        result.update(scores(hyps, refs))
        if nbest > 1:
            many, wall, cpu = decode(tool, model, words, work, nbest)
            oracle = {}
            for stress, suffix in [(True, ""), (False, "_no_stress")]:
                picked = [closest(many[word], word_refs, stress) for word, word_refs in zip(words, refs, strict=True)]
                score = g2p_scores(picked, refs, stress=stress)
                oracle[f"wer{suffix}"], oracle[f"per{suffix}"] = score["wer"], score["per"]
            result["nbest"] = {"n": nbest, "decode_seconds": wall, "decode_cpu_seconds": cpu, "oracle": oracle}
    result["cpu"] = cpu_model()
    result["python"] = platform.python_version()
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out"), help="directory for phonetisaurus.json (./out)")
    parser.add_argument("--limit", type=int, default=None, help="use N train words (and N test words); smoke tests")
    parser.add_argument("--limit-test", type=int, default=None, help="use M test words (default: --limit, or all)")
    parser.add_argument("--order", type=int, default=DEFAULT_ORDER, help=f"joint n-gram order ({DEFAULT_ORDER})")
    parser.add_argument("--nbest", type=int, default=1, help="K > 1: also decode K-best for oracle scores (off)")
    args = parser.parse_args(argv)
    if args.order < 1:
        parser.error(f"--order: expected at least 1, received {args.order}")
    result = run_benchmark(order=args.order, limit=args.limit, limit_test=args.limit_test, nbest=args.nbest)
    line = json.dumps(result)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "phonetisaurus.json").write_text(line + "\n")
    print(line)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
