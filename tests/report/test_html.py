"""report.html from a made-up results.json: one section per claim, escaped text, embedded figures, no URLs."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser

import pytest
from report_samples import (
    DECIDES,
    FAILED_CLAIM,
    HOSTILE,
    MISSING_FIGURE,
    MISSING_FIGURE_CLAIM,
    NO_CRITERION_CLAIM,
    png_bytes,
    sample_results,
)

from attnlab.report import render, render_saved
from attnlab.report.html import format_number

VOID = {"meta", "link", "img", "br", "hr", "input", "col", "wbr", "source"}


class Page(HTMLParser):
    """Parses the report: every start tag with its attributes, the text of each claim section, tag balance."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.sections: dict[str, str] = {}  # id -> text content
        self.section_imgs: dict[str, list[dict[str, str]]] = {}
        self.stack: list[str] = []
        self.unbalanced: list[str] = []
        self._section: str | None = None
        self._text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = {name: value or "" for name, value in attrs}
        self.tags.append((tag, attrs))
        if tag == "section":
            self._section, self._text = attrs.get("id", ""), []
            self.section_imgs[self._section] = []
        if tag == "img" and self._section is not None:
            self.section_imgs[self._section].append(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.unbalanced.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        if tag == "section" and self._section is not None:
            self.sections[self._section] = "".join(self._text)
            self._section = None

    def handle_data(self, data):
        if self._section is not None:
            self._text.append(data)


@pytest.fixture
def rendered(tmp_path):
    results = sample_results(tmp_path)
    path = render(results, tmp_path)
    text = path.read_text(encoding="utf-8")
    return results, path, text, Page(text)


def test_one_section_per_claim_in_order(rendered):
    _, path, _, page = rendered
    assert path.name == "report.html"
    ids = [attrs.get("id") for tag, attrs in page.tags if tag == "section"]
    assert ids == [f"claim-{n}" for n in range(1, 14)]
    assert not page.unbalanced and not page.stack, (page.unbalanced, page.stack)


def test_summary_links_every_section_with_its_verdict(rendered):
    _, _, text, page = rendered
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a"]
    assert links == [f"#claim-{n}" for n in range(1, 14)]
    summary = text.split('<nav id="summary">', 1)[1].split("</nav>", 1)[0]
    assert "13 claims: 9 hold, 2 do not hold, 1 inconclusive, 1 failed" in summary
    assert summary.count('class="badge holds"') == 9
    assert summary.count('class="badge fails"') == 2
    assert summary.count('class="badge inconclusive"') == 1
    assert summary.count('class="badge failed"') == 1


def test_each_section_holds_the_claim_the_evidence_and_the_verdict(rendered):
    results, _, text, page = rendered
    for claim in results["claims"]:
        if "error" in claim:
            continue
        body = page.sections[f"claim-{claim['number']}"]
        assert claim["statement"] in body  # unescaped by the parser: the text survives intact
        assert claim["verdict"]["because"] in body
        assert claim["command"] in body
        assert "rnn + additive" in body and "transformer <enc-dec>" in body
    section10 = text.split('id="claim-10"', 1)[1].split("</section>", 1)[0]
    assert '<span class="badge fails">does not hold</span>' in section10
    section11 = text.split('id="claim-11"', 1)[1].split("</section>", 1)[0]
    assert '<span class="badge inconclusive">inconclusive</span>' in section11


def test_every_verdict_shows_its_criterion_and_an_inconclusive_one_what_would_decide_it(rendered):
    results, _, text, page = rendered
    for claim in results["claims"]:
        body = page.sections[f"claim-{claim['number']}"]
        if claim["number"] == NO_CRITERION_CLAIM:
            assert "Criterion: none recorded" in body
            continue
        assert f"Criterion: {claim['criterion']}" in body, claim["number"]
        section = text.split(f'id="claim-{claim["number"]}"', 1)[1].split("</section>", 1)[0]
        # next to the verdict: the criterion follows the verdict line, before any table
        verdict_at = section.index('class="verdict"')
        assert verdict_at < section.index('class="criterion"') < section.find("<table") % (len(section) + 1)
        assert ("What would decide it" in body) == (claim.get("verdict", {}).get("status") == "inconclusive")
    assert f"What would decide it: {DECIDES}" in page.sections["claim-11"]
    assert HOSTILE in page.sections["claim-2"].split("Criterion: ", 1)[1]  # escaped like all text


def test_numbers_are_formatted(rendered):
    _, _, _, page = rendered
    body = page.sections["claim-1"]
    for shown in ("123,456", "0.9731", "18,235", "1.234e-6", "NaN", "0.3333", "98,765", "yes", "no", "–"):
        assert shown in body, shown
    assert "0.973123456" not in body


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (7, "7"),
        (123456, "123,456"),
        (-20000, "-20,000"),
        (0.0, "0"),
        (0.973123456, "0.9731"),
        (1 / 3, "0.3333"),
        (2.5, "2.5"),
        (1234.567, "1235"),
        (18234.56, "18,235"),
        (1.2345e-6, "1.234e-6"),
        (3.0e13, "3.000e13"),
        (float("nan"), "NaN"),
        (float("inf"), "∞"),
        (float("-inf"), "−∞"),
    ],
)
def test_format_number(value, shown):
    assert format_number(value) == shown


def test_all_text_is_escaped(rendered):
    _, _, text, page = rendered
    assert HOSTILE not in text
    assert "<script" not in text.lower() and "<b>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt; &#x27;quoted&#x27;" in text
    assert "&lt;enc-dec&gt;" in text and "cpu &lt;x86_64&gt;" in text
    assert HOSTILE in page.sections["claim-2"]  # the title, shown as text
    assert HOSTILE in page.sections["claim-3"]  # the statement


def test_figures_are_embedded_as_data_uris(rendered):
    results, _, _, page = rendered
    imgs = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(imgs) == 12  # one figure for each of the 12 claims that ran; claim 9 has a missing second one
    for claim in results["claims"]:
        shown = page.section_imgs[f"claim-{claim['number']}"]
        figures = [f for f in claim.get("figures", []) if f["file"] != MISSING_FIGURE]
        assert len(shown) == len(figures)
        for attrs, figure in zip(shown, figures, strict=True):
            prefix = "data:image/png;base64,"
            assert attrs["src"].startswith(prefix)
            written = (page_dir := rendered[1].parent / figure["file"]).read_bytes()
            assert base64.b64decode(attrs["src"][len(prefix) :]) == written, page_dir
            assert attrs["alt"] == figure["caption"]


def test_no_external_references(rendered, tmp_path):
    _, path, text, page = rendered
    assert not re.search(r"https?:", text, re.IGNORECASE)
    assert "url(" not in text and "@import" not in text
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            if name in attrs:
                assert attrs[name].startswith(("data:", "#")), (tag, attrs[name][:60])
    # Copied alone, the page is the same page: nothing else in the output directory is needed.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(path, alone / "report.html")
    shutil.rmtree(path.parent / "figures")
    assert (alone / "report.html").read_text(encoding="utf-8") == text


def test_failed_claim_is_a_visible_section(rendered):
    _, _, text, page = rendered
    body = page.sections[f"claim-{FAILED_CLAIM}"]
    assert "failed to run" in body
    assert "RuntimeError: out of memory <in decoder>" in body
    assert "&lt;in decoder&gt;" in text
    section = text.split(f'id="claim-{FAILED_CLAIM}"', 1)[0].rsplit("<section", 1)[1]
    assert "failed" in section  # the section's class marks it


def test_missing_figure_is_a_note_not_a_broken_image(rendered):
    _, _, _, page = rendered
    body = page.sections[f"claim-{MISSING_FIGURE_CLAIM}"]
    assert f"figure missing: {MISSING_FIGURE}" in body
    assert len(page.section_imgs[f"claim-{MISSING_FIGURE_CLAIM}"]) == 1


def test_a_file_that_is_not_an_image_is_a_note(tmp_path):
    (tmp_path / "plot.png").write_text("not a png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "ok.png").write_bytes(png_bytes(4, 3))
    claim = {
        "number": 1,
        "title": "t",
        "statement": "s",
        "verdict": {"status": "holds", "because": "b"},
        "figures": [{"file": name, "caption": name} for name in ("plot.png", "empty.png", "ok.png", "")],
    }
    text = render({"claims": [claim]}, tmp_path).read_text(encoding="utf-8")
    assert "figure not an image: plot.png" in text
    assert "figure empty: empty.png" in text
    assert "figure missing: </div>" in text
    assert text.count("<img ") == 1


def test_render_saved_reads_results_json(tmp_path):
    results = sample_results(tmp_path)
    first = render(results, tmp_path).read_text(encoding="utf-8")
    (tmp_path / "results.json").write_text(json.dumps(results))  # NaN in a table survives as JSON's NaN
    assert render_saved(tmp_path).read_text(encoding="utf-8") == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report-")]  # no temporary file left


def test_minimal_and_empty_results(tmp_path):
    text = render({"claims": []}, tmp_path / "new").read_text(encoding="utf-8")
    assert "0 claims: none recorded" in text
    claim = {"number": 3, "title": "no verdict recorded", "statement": "s"}
    text = render({"claims": [claim]}, tmp_path).read_text(encoding="utf-8")
    assert 'id="claim-3"' in text and "badge inconclusive" in text


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(TypeError, match="results must be"):
        render([], tmp_path)
    with pytest.raises(TypeError, match="claims"):
        render({"claims": [1, 2]}, tmp_path)
