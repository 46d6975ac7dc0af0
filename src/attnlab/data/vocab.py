"""Vocabulary: a fixed, JSON-serializable mapping between string symbols and integer ids.

Ids 0..4 are reserved for the specials, in this order: PAD=0 (so zero-filled tensors are padding), BOS, EOS,
UNK (any symbol not in the vocabulary) and SEP (separates source from target when a decoder-only model reads
``[source; SEP; target]``). The vocabulary's own symbols follow, in the order given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from numbers import Integral

import torch

PAD, BOS, EOS, UNK, SEP = "<pad>", "<bos>", "<eos>", "<unk>", "<sep>"
SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK, SEP)


class Vocab:
    """Symbols (strings) to ids and back, with the five specials first.

    ``Vocab(symbols)`` takes the symbols in the order their ids should follow; duplicates and special names
    are refused so that every id has exactly one meaning.
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    unk_id = 3
    sep_id = 4

    def __init__(self, symbols: Iterable[str]) -> None:
        itos = list(SPECIALS)
        stoi = {s: i for i, s in enumerate(itos)}
        for symbol in symbols:
            if not isinstance(symbol, str):
                raise TypeError(f"symbols: expected str items, received {type(symbol).__name__} {symbol!r}")
            if symbol in stoi:
                kind = "a special" if symbol in SPECIALS else "a duplicate"
                raise ValueError(f"symbols: expected unique non-special symbols, received {kind} {symbol!r}")
            stoi[symbol] = len(itos)
            itos.append(symbol)
        self._itos: tuple[str, ...] = tuple(itos)
        self._stoi: dict[str, int] = stoi

    @property
    def symbols(self) -> tuple[str, ...]:
        """The non-special symbols, in id order (ids start at ``len(SPECIALS)``)."""
        return self._itos[len(SPECIALS) :]

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._itos == other._itos

    def __hash__(self) -> int:
        return hash(self._itos)

    def __repr__(self) -> str:
        return f"Vocab({len(self.symbols)} symbols + {len(SPECIALS)} specials)"

    def encode(self, seq: Iterable[str], add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Ids for ``seq``; unknown symbols map to UNK. A plain ``str`` is read character by character."""
        ids = [self.bos_id] if add_bos else []
        for symbol in seq:
            if not isinstance(symbol, str):
                # An int would silently become UNK; refuse it instead (see synthetic.as_symbols).
                raise TypeError(f"seq: expected str symbols, received {type(symbol).__name__} {symbol!r}")
            ids.append(self._stoi.get(symbol, self.unk_id))
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor, strip_specials: bool = True) -> list[str]:
        """Symbols for ``ids``.

        With ``strip_specials`` (what a model's output needs) decoding stops at the first EOS and drops PAD,
        BOS and SEP; UNK stays as ``"<unk>"`` because it stands for content. Without it every id is rendered.
        """
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype.is_complex:
                raise TypeError(f"ids: expected a 1-D integer tensor, received {ids.dim()}-D tensor of {ids.dtype}")
            ids = ids.tolist()
        out = []
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, Integral):
                raise TypeError(f"ids: expected int items, received {type(i).__name__} {i!r}")
            i = int(i)
            if not 0 <= i < len(self._itos):
                raise ValueError(f"ids: expected ids in [0, {len(self._itos)}), received {i}")
            if strip_specials:
                if i == self.eos_id:
                    break
                if i in (self.pad_id, self.bos_id, self.sep_id):
                    continue
            out.append(self._itos[i])
        return out

    def to_json(self) -> list[str]:
        """Every symbol in id order, specials included: index in the list = id."""
        return list(self._itos)

    @classmethod
    def from_json(cls, data: Sequence[str]) -> Vocab:
        """Inverse of :meth:`to_json`; checks that the specials are where this code expects them."""
        if not isinstance(data, list | tuple):
            raise TypeError(f"data: expected a list of str, received {type(data).__name__}")
        head = tuple(data[: len(SPECIALS)])
        if head != SPECIALS:
            raise ValueError(f"data: expected the specials {list(SPECIALS)} first, received {list(head)}")
        return cls(data[len(SPECIALS) :])


def check_int(name: str, value: object, minimum: int) -> int:
    """Argument check shared by the data modules: ``value`` must be an int >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name}: expected an int, received {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, received {value}")
    return int(value)
