"""What one claim of the tour produces: the evidence (tables, figures, numbers) and a verdict computed from it.

Every claim section of ``report.html`` and every entry of ``results.json`` is one :class:`ClaimResult`. It is
plain data (``to_json`` / ``from_json`` round-trip exactly), so the report is rendered from saved results only and
a rerun of the tour skips claims whose result is already on disk.

Figures are PNG files written under the tour's output directory; ``Figure.file`` is relative to that directory.

A verdict is judged by the claim's ``criterion``, fixed in the claim's code before anything runs (its thresholds
are constants there) and saved next to the verdict, so a reader sees what "holds" meant. "inconclusive" is a verdict
of its own: the evidence could not decide (too short a budget, too few seeds), and ``Verdict.decides`` says what
would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ClaimResult", "Figure", "Table", "Verdict"]

VERDICTS = ("holds", "does not hold", "inconclusive")
# what an inconclusive verdict saved before verdicts said what would decide them reads as
OLD_DECIDES = "not recorded (saved by an older attnlab): rerun the claim"


@dataclass(frozen=True)
class Table:
    """A small table: ``columns`` names, ``rows`` of JSON scalars (str, int, float, bool, None)."""

    caption: str
    columns: list[str]
    rows: list[list[Any]]

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(
                    f"Table {self.caption!r}: row {row!r} has {len(row)} cells, expected {len(self.columns)}"
                )


@dataclass(frozen=True)
class Figure:
    """A PNG under the output directory (``file`` is relative to it) with the sentence that says what it shows."""

    file: str
    caption: str


@dataclass(frozen=True)
class Verdict:
    """``status`` is one of ``holds``, ``does not hold``, ``inconclusive``; ``because`` quotes the numbers;
    ``decides`` (required for ``inconclusive``, empty otherwise) says what would decide it: a longer budget, more
    seeds, the command to run."""

    status: str
    because: str
    decides: str = ""

    def __post_init__(self) -> None:
        if self.status not in VERDICTS:
            raise ValueError(f"Verdict.status must be one of {VERDICTS}; received {self.status!r}")
        if self.status == "inconclusive" and not self.decides.strip():
            raise ValueError("an inconclusive Verdict must say what would decide it (decides=...)")
        if self.status != "inconclusive" and self.decides:
            raise ValueError(f"Verdict.decides is for inconclusive verdicts; this one {self.status!r}")

    @classmethod
    def check(cls, holds: bool, because: str) -> Verdict:
        return cls("holds" if holds else "does not hold", because)

    @classmethod
    def inconclusive(cls, because: str, decides: str) -> Verdict:
        return cls("inconclusive", because, decides)


@dataclass(frozen=True)
class ClaimResult:
    """The result of one claim: what is claimed, the criterion it is judged by, the evidence, the verdict, how long
    it took and how to rerun it. ``criterion`` is empty only in results saved before criteria were recorded."""

    number: int
    title: str
    statement: str
    verdict: Verdict
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)  # the raw measurements the verdict was computed from
    seconds: float = 0.0
    budget: str = "quick"
    command: str = ""
    criterion: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClaimResult:
        data = dict(data)  # older files lack "criterion" and "decides": the defaults stand in
        verdict = dict(data["verdict"])
        if verdict.get("status") == "inconclusive" and not verdict.get("decides"):
            verdict["decides"] = OLD_DECIDES
        data["verdict"] = Verdict(**verdict)
        data["tables"] = [Table(**t) for t in data.get("tables", [])]
        data["figures"] = [Figure(**f) for f in data.get("figures", [])]
        return cls(**data)
