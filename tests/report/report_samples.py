"""A made-up ``results.json`` with 13 claims and its figures, for the report tests (no experiment is run).

The sample holds every kind of section the report must render: each verdict (the inconclusive one with what would
decide it), each claim's criterion, a failed claim (an error entry), a claim saved before criteria were recorded,
a missing figure, text that needs HTML escaping, and table cells of every JSON scalar type.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

HOSTILE = "<script>alert(\"x\")</script> & <b>bold</b> 'quoted'"
FAILED_CLAIM = 6
MISSING_FIGURE_CLAIM = 9
MISSING_FIGURE = "figures/claim-09-never-written.png"

TITLES = {
    1: "AT reads another component; SA reads its own input",
    2: "AT connects encoder and decoder; SA lives inside one component",
    3: "SA is applied many times per model, AT once",
    4: "SA models dependencies inside one sequence; AT between two",
    5: "AT connects two modalities",
    6: "SA can simulate AT with a prefix mask",
    7: "Multi-head applies to AT too",
    8: "Every score function applies to both AT and SA",
    9: "Key/query/value projections apply to AT too",
    10: "Without attention, RNN encoder-decoders degrade with length",
    11: "Self-attention trains faster than recurrence",
    12: "Attention is an expectation",
    13: "Self-attention in CNNs",
}
STATUSES = {10: "does not hold", 11: "inconclusive", 4: "does not hold"}
DECIDES = "3 seeds at the full budget: `attnlab tour --budget full --claims 11`"
NO_CRITERION_CLAIM = 12  # saved by a tour older than criteria: the entry has none


def criterion(number: int) -> str:
    return f"Holds when claim {number}'s measure passes 0.5 <in units> on 3 seeds; otherwise it does not hold."


def png_bytes(width: int, height: int, rgb: tuple[int, int, int] = (40, 110, 200)) -> bytes:
    """A valid RGB PNG (a horizontal gradient of ``rgb``) built from the format itself, no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = bytearray()
    for _ in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            shade = x / max(width - 1, 1)
            rows.extend(int(c * (0.3 + 0.7 * shade)) for c in rgb)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows))) + chunk(b"IEND", b"")
    )


def _plot(path: Path, number: int) -> None:
    """A small figure that looks like the tour's: an attention map or a curve (matplotlib, no pyplot state)."""
    import numpy as np
    from matplotlib.figure import Figure

    rng = np.random.default_rng(number)
    fig = Figure(figsize=(5.0, 2.6), dpi=80, layout="constrained")
    ax = fig.add_subplot()
    if number % 2:
        logits = rng.normal(size=(8, 12)) + 3 * np.eye(8, 12)
        weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        image = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set(xlabel="key position", ylabel="query position", title=f"claim {number}: attention weights")
        fig.colorbar(image, ax=ax)
    else:
        lengths = np.arange(5, 55, 5)
        ax.plot(lengths, 1 - 0.012 * lengths + rng.normal(0, 0.01, lengths.size), "o-", label="with attention")
        ax.plot(lengths, np.exp(-lengths / 25), "s--", label="without attention")
        ax.set(xlabel="input length", ylabel="accuracy", title=f"claim {number}", ylim=(0, 1.05))
        ax.legend(loc="lower left")
    fig.savefig(path, format="png")


def sample_results(out_dir: Path, *, plots: bool = False) -> dict[str, Any]:
    """Write the figures under ``out_dir/figures`` and return the results.json structure that refers to them.

    ``plots=True`` draws real matplotlib figures (for the screenshot); otherwise tiny hand-built PNGs (fast).
    """
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    claims: list[dict[str, Any]] = []
    for number in range(1, 14):
        title = TITLES[number]
        statement = f"{title}, measured on the data that ships offline."
        if number == FAILED_CLAIM:
            claims.append(
                {
                    "number": number,
                    "title": title,
                    "statement": statement,
                    "error": "Traceback (most recent call last):\n  ...\nRuntimeError: out of memory <in decoder>",
                    "criterion": criterion(number),
                }
            )
            continue
        figure = f"figures/claim-{number:02d}.png"
        if plots:
            _plot(out_dir / figure, number)
        else:
            (out_dir / figure).write_bytes(png_bytes(24 + number, 12, (30 + 15 * number, 90, 200 - 10 * number)))
        figures = [{"file": figure, "caption": f"What claim {number} looks like on the digits data."}]
        if number == MISSING_FIGURE_CLAIM:
            figures.append({"file": MISSING_FIGURE, "caption": "A figure whose file was never written."})
        status = STATUSES.get(number, "holds")
        entry = {
            "number": number,
            "title": HOSTILE if number == 2 else title,
            "statement": statement + (" " + HOSTILE if number == 3 else ""),
            "verdict": {
                "status": status,
                "because": f"accuracy 0.9731 with attention vs 0.4112 without (n = {1000 + number})"
                + (f" {HOSTILE}" if number == 2 else ""),
                "decides": DECIDES if status == "inconclusive" else "",
            },
            "tables": [
                {
                    "caption": f"Claim {number}: measurements on the test split",
                    "columns": ["model", "params", "accuracy", "tokens/s", "loss", "converged", "note"],
                    "rows": [
                        ["rnn + additive", 123456, 0.973123456, 18234.56, 1.2345e-6, True, None],
                        ["transformer <enc-dec>", 98765, 0.5, 95321.0, float("nan"), False, HOSTILE[:29]],
                        ["decoder-only", 7, 1 / 3, 12.0, 0.0, True, ""],
                    ],
                }
            ],
            "figures": figures,
            "numbers": {"accuracy": [0.9731, 0.4112], "n": 1000 + number},
            "seconds": 12.5 * number,
            "budget": "quick",
            "command": f"attnlab tour --budget quick --only {number} --out runs/tour",
            "criterion": criterion(number) + (f" {HOSTILE}" if number == 2 else ""),
        }
        if number == NO_CRITERION_CLAIM:
            del entry["criterion"], entry["verdict"]["decides"]
        claims.append(entry)
    return {
        "attnlab_version": "0.1.0",
        "budget": "quick",
        "created": "2025-01-02T03:04:05+00:00",
        "seconds": 1234.5,
        "machine": {"python": "3.11.9", "torch": "2.13.0", "cpus": 2, "device": "cpu <x86_64>"},
        "claims": claims,
    }
