"""The tour's report: one self-contained static HTML page rendered from saved results (``results.json``) only.

The report knows plain JSON dicts, never models, experiments or the lab's dataclasses: ``render`` takes the
``results.json`` structure, so a report can be rebuilt from the files on disk alone.
"""

from __future__ import annotations

from .html import render, render_saved

__all__ = ["render", "render_saved"]
