"""tools/check_book.py, the real-browser check of the book, tested on small pages made here: each fault it must catch
on a page of its own, and a clean page (with code that looks like LaTeX, a wide table in its own scroll box and, where
MathJax is fetched, typeset math) that must pass. Skipped where Chromium, chromedriver or selenium is missing;
tools/test.sh runs the check itself on the built book."""
import base64, shutil, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import check_book as cb                    # noqa: E402

try: cb.find_browser()
except SystemExit as e: pytest.skip(str(e), allow_module_level=True)

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
MATHJAX = ROOT / "nbs" / "_vendor" / "mathjax"

def _page(body, head=""):
    return f'<!doctype html><html><head><meta charset="utf-8">{head}</head><body><main class="bd-article">{body}</main></body></html>'

PAGES = {
    "clean.html": _page('<p>Plain prose: it costs $5 or $10 a day.</p><img src="dot.png" width="10" height="10">'
                        r'<pre>print("\(x\) $$ \begin{x}")</pre><p>Inline <code>\[y\]</code>.</p>'
                        '<div style="overflow-x:auto"><table style="width:3000px"><tr><td>wide, in its own box</td></tr></table></div>'
                        '<details><summary>Show library code</summary><pre>x = 1</pre></details>'),
    "external.html": _page('<img src="http://example.com/x.png">'),
    "font.html": _page("<p>text</p>", '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'),
    "latex.html": _page(r"<p>The mean \(\mu\) is shown raw.</p>"),
    "display.html": _page(r"<p>$$\sum_i x_i$$</p>"),
    "command.html": _page(r"<p>The width sigma is \sigma nm.</p>"),
    "dollar.html": _page(r"<p>The mean $x$ is shown raw.</p>"),
    "directive.html": _page("<details><summary>Show library code</summary><pre>#| export\nx = 1</pre></details>"),
    "missing.html": _page('<img src="nope.png">'),
    "wide.html": _page('<div class="output" style="width:3000px">a figure too wide</div>'),
    "math.html": _page(r"<p>The mean \(\mu\) and $$\sum_i x_i$$</p>",
                       '<script defer src="mathjax/es5/tex-mml-chtml.js"></script>'),
}

@pytest.fixture(scope="module")
def found(tmp_path_factory):
    "{page: [problem, ...]} for every page above, checked in one browser session."
    html = tmp_path_factory.mktemp("book")
    (html / "dot.png").write_bytes(PNG)
    pages = dict(PAGES)
    if MATHJAX.is_dir(): (html / "mathjax").symlink_to(MATHJAX, target_is_directory=True)
    else: del pages["math.html"]
    for name, text in pages.items(): (html / name).write_text(text, encoding="utf-8")
    fails = cb.check_book(html, list(pages), screenshots=html / "shots", echo=lambda s: None)
    out = {p: [f.problem for f in fails if f.page == p] for p in pages}
    out["_shots"] = sorted(p.name for p in (html / "shots").glob("*.png"))
    return out

def _has(problems, start): return any(p.startswith(start) for p in problems)

def test_clean_page_passes(found): assert found["clean.html"] == []

def test_typeset_math_passes(found):
    if "math.html" not in found: pytest.skip("MathJax not fetched (bash tools/fetch_mathjax.sh)")
    assert found["math.html"] == []

def test_request_to_another_host_fails(found):
    assert _has(found["external.html"], "request to another host: http://example.com/x.png")
    assert _has(found["external.html"], "image did not load")
    assert _has(found["font.html"], "request to another host: https://fonts.googleapis.com/")

def test_raw_latex_fails(found):
    assert _has(found["latex.html"], "raw LaTeX in the text: …The mean \\(\\mu\\)")
    assert _has(found["display.html"], "raw LaTeX in the text: …$$")
    assert _has(found["command.html"], "raw LaTeX in the text: …The width sigma is \\sigma nm.")
    assert _has(found["dollar.html"], "raw LaTeX in the text: …The mean $x$")

def test_directive_fails_even_folded(found): assert _has(found["directive.html"], "`#|` visible: …#| export")

def test_missing_image_fails(found):
    assert _has(found["missing.html"], "image did not load: nope.png")
    assert _has(found["missing.html"], "request failed:")

def test_horizontal_scroll_fails(found):
    assert _has(found["wide.html"], "the main column scrolls horizontally")
    assert any("div.output" in p for p in found["wide.html"]), "names the element that sticks out"

def test_screenshots(found): assert "clean.html".replace(".html", ".png") in found["_shots"]

def test_pages_of_a_book(tmp_path):
    for name in ["index.html", "a/b.html", "_static/x.html", "_sources/y.html"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True); (tmp_path / name).write_text("")
    assert cb.pages(tmp_path) == ["a/b.html", "index.html"]
