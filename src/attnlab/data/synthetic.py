"""Synthetic tasks: copy / reverse / sort of integer sequences, and ListOps.

Sequence tasks map a source of ints in ``[0, vocab_size)`` to a target of the same length: the same tokens
(copy), reversed (reverse) or in ascending order (sort). Lengths are uniform in ``[min_len, max_len]``, so
training on short and testing on long sequences measures length generalization. Models see the tokens through
``task_vocab(vocab_size)``, whose symbol for token ``t`` is ``str(t)``; :func:`as_symbols` converts the pairs.

ListOps (Nangia & Bowman 2018, "ListOps: A Diagnostic Dataset for Latent Tree Learning"): prefix expressions
such as ``[MAX 2 9 [MIN 4 7 ] 0 ]`` over the digits 0-9 with MAX, MIN, MED (median, rounded down as in the
original generator's ``int(np.median(...))``) and SM (sum mod 10); the label is the value, 0-9. The generator
follows the original: the root is an operator; every argument below it is another operator with probability
0.25 while the depth limit allows, otherwise a digit; each operator takes 2..``max_args`` arguments;
expressions longer than ``max_length`` tokens are drawn again. Unlike the original, duplicates are not
removed by default, and short expressions recur: with ``max_depth=6, max_args=5, max_length=100``, 19% of 2,000
seed-1 expressions also occur among 20,000 seed-0 ones. Pass the training expressions as ``exclude`` when
drawing an evaluation set to make it disjoint.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from attnlab.data.vocab import Vocab, check_int

SEQUENCE_TASKS = ("copy", "reverse", "sort")
OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
DIGITS = tuple(str(d) for d in range(10))
CLOSE = "]"
OPERATOR_PROB = 0.25  # the original generator's chance that an argument is itself an operator


def _target(name: str, source: list[int]) -> list[int]:
    if name == "copy":
        return list(source)
    if name == "reverse":
        return source[::-1]
    return sorted(source)


def make_sequence_task(
    name: str, n: int, min_len: int, max_len: int, vocab_size: int, seed: int
) -> list[tuple[list[int], list[int]]]:
    """``n`` pairs ``(source, target)`` of task ``name`` ("copy", "reverse" or "sort"), deterministic in ``seed``."""
    if name not in SEQUENCE_TASKS:
        raise ValueError(f"name: expected one of {SEQUENCE_TASKS}, received {name!r}")
    n = check_int("n", n, 0)
    min_len = check_int("min_len", min_len, 1)
    max_len = check_int("max_len", max_len, min_len)
    vocab_size = check_int("vocab_size", vocab_size, 2)
    rng = np.random.default_rng(check_int("seed", seed, 0))
    pairs = []
    for _ in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        source = rng.integers(0, vocab_size, size=length).tolist()
        pairs.append((source, _target(name, source)))
    return pairs


def task_vocab(vocab_size: int) -> Vocab:
    """The vocabulary of the sequence tasks: symbol ``str(t)`` for token ``t``, in token order."""
    return Vocab(str(t) for t in range(check_int("vocab_size", vocab_size, 1)))


def as_symbols(pairs: list[tuple[list[int], list[int]]]) -> list[tuple[list[str], list[str]]]:
    """Integer pairs to symbol pairs, as :class:`Vocab` reads them (it refuses ints rather than map them to UNK)."""
    return [([str(t) for t in source], [str(t) for t in target]) for source, target in pairs]


def _apply(operator: str, args: list[int]) -> int:
    if operator == "[MAX":
        return max(args)
    if operator == "[MIN":
        return min(args)
    if operator == "[SM":
        return sum(args) % 10
    ordered = sorted(args)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2


def evaluate_listops(tokens: list[str]) -> int:
    """Value (0-9) of a ListOps expression given as tokens; malformed input raises ValueError."""
    stack: list[tuple[str, list[int]]] = [("", [])]  # sentinel collects the top-level value
    for pos, token in enumerate(tokens):
        if token in OPERATORS:
            stack.append((token, []))
        elif token in DIGITS:
            stack[-1][1].append(int(token))
        elif token == CLOSE:
            if len(stack) == 1:
                raise ValueError(f"tokens: unmatched {CLOSE!r} at position {pos}")
            operator, args = stack.pop()
            if not args:
                raise ValueError(f"tokens: expected arguments for {operator!r} closed at position {pos}, received none")
            stack[-1][1].append(_apply(operator, args))
        else:
            raise ValueError(f"tokens: expected an operator, a digit or {CLOSE!r}, received {token!r} at {pos}")
    if len(stack) != 1:
        raise ValueError(f"tokens: expected a closed expression, received {len(stack) - 1} unclosed operators")
    if len(stack[0][1]) != 1:
        raise ValueError(f"tokens: expected exactly one top-level expression, received {len(stack[0][1])}")
    return stack[0][1][0]


class _Uniforms:
    """Uniform draws from a NumPy generator, fetched in blocks: per-call ``Generator`` methods cost microseconds,
    which dominated ListOps generation."""

    def __init__(self, seed: int, block: int = 8192) -> None:
        self._rng = np.random.default_rng(seed)
        self._block = block
        self._values = self._rng.random(block).tolist()
        self._next = 0

    def random(self) -> float:
        """A float in [0, 1)."""
        if self._next == self._block:
            self._values, self._next = self._rng.random(self._block).tolist(), 0
        self._next += 1
        return self._values[self._next - 1]

    def below(self, k: int) -> int:
        """An int in [0, k)."""
        return int(self.random() * k)


class _TooLong(Exception):
    """Raised inside generation as soon as an expression passes ``max_length`` tokens."""


def _expression(rng: _Uniforms, tokens: list[str], depth: int, max_depth: int, max_args: int, max_length: int) -> None:
    """Append one random expression whose root operator sits at ``depth`` (the root is depth 1) to ``tokens``.

    Stopping as soon as the tokens pass ``max_length`` rejects exactly the draws a generate-then-filter loop
    would, without building them: with many arguments the trees grow exponentially with depth.
    """
    tokens.append(OPERATORS[rng.below(len(OPERATORS))])
    for _ in range(2 + rng.below(max_args - 1)):
        if depth < max_depth and rng.random() < OPERATOR_PROB:
            _expression(rng, tokens, depth + 1, max_depth, max_args, max_length)
        else:
            tokens.append(DIGITS[rng.below(10)])
        if len(tokens) > max_length:
            raise _TooLong
    tokens.append(CLOSE)


def make_listops(
    n: int,
    max_depth: int,
    max_args: int,
    max_length: int,
    seed: int,
    *,
    exclude: Collection[tuple[str, ...]] = frozenset(),
) -> list[tuple[list[str], int]]:
    """``n`` ListOps examples ``(tokens, value)`` with at most ``max_depth`` nested operators, 2..``max_args``
    arguments each and at most ``max_length`` tokens; deterministic in ``seed`` (and ``exclude``).

    Expressions whose token tuple is in ``exclude`` (a set, e.g. of the training expressions) are drawn again.
    """
    n = check_int("n", n, 0)
    max_depth = check_int("max_depth", max_depth, 1)
    max_args = check_int("max_args", max_args, 2)
    max_length = check_int("max_length", max_length, 4)  # "[MAX 1 2 ]" is the shortest expression
    rng = _Uniforms(check_int("seed", seed, 0))
    examples = []
    while len(examples) < n:
        tokens: list[str] = []
        try:
            _expression(rng, tokens, 1, max_depth, max_args, max_length)
        except _TooLong:
            continue
        if len(tokens) <= max_length and tuple(tokens) not in exclude:
            examples.append((tokens, evaluate_listops(tokens)))
    return examples


def listops_vocab() -> Vocab:
    """Operators, digits and the closing bracket, in that order."""
    return Vocab((*OPERATORS, *DIGITS, CLOSE))
