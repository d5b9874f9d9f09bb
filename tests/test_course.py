"""The book as a course: every chapter ends with exercises whose solutions are checked, the book folds the solutions,
student copies leave them out, and figures are drawn at a readable resolution."""
import json, re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "nbs" / "_ext"))
import make_student_copies as msc          # noqa: E402
from dl4smlm_book import present_cell      # noqa: E402

CHAPTERS = [p for p in msc.chapters() if p.name != "index.ipynb"]    # index: the landing page, not a chapter
CHECK = re.compile(r"\btest_(eq|close|fail|ne|warns)\(|\bassert\b")

def _cells(path): return json.loads(path.read_text(encoding="utf-8"))["cells"]
def _text(cell): return msc._source(cell)

@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_has_exercises(path):
    cells = _cells(path)
    md = "\n".join(_text(c) for c in cells if c["cell_type"] == "markdown")
    assert "## Questionnaire" in md and msc.ANSWERS.search(md), f"{path.name}: a questionnaire with folded answers"
    assert "## Your turn" in md, f"{path.name}: a 'Your turn' section"
    solutions = [_text(c) for c in cells if msc.is_solution(c) and c["cell_type"] == "code"]
    assert len(solutions) >= 2, f"{path.name}: {len(solutions)} solution cells, expected one per task (at least 2)"
    for s in solutions: assert CHECK.search(s), f"{path.name}: a solution that checks nothing:\n{s[:300]}"

def test_student_copies(tmp_path):
    out = tmp_path / "student"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "make_student_copies.py"), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    copies = sorted(out.glob("*.ipynb"))
    assert [p.name for p in copies] == [p.name for p in msc.chapters()]
    for src, copy in zip(msc.chapters(), copies):
        before, after = _cells(src), _cells(copy)
        assert not any(map(msc.is_solution, [c for c in after if c["cell_type"] == "markdown"]))
        for c in after:
            assert not msc.ANSWERS.search(_text(c)), f"{copy.name}: answers left in"
            if c["cell_type"] == "code": assert not any(msc.DIRECTIVE.match(l) for l in _text(c).splitlines())
        kept = [c for c in before if not msc.is_solution(c)]
        assert len(after) == len(kept) + sum(msc.is_solution(c) for c in before if c["cell_type"] == "code")
        assert [_text(c) for c in after if c["cell_type"] == "code" and _text(c).startswith("# Your turn")] == \
               [next(l for l in _text(c).splitlines() if l.startswith("# Your turn")) + "\n"
                for c in before if c["cell_type"] == "code" and msc.is_solution(c)]
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "make_student_copies.py"), str(out)], capture_output=True, text=True)
    assert r.returncode != 0 and "not an empty folder" in r.stderr and len(list(out.iterdir())) == len(copies)   # nothing overwritten

def test_student_cell():
    sol = {"cell_type": "code", "source": "#| solution\n# Your turn 2\nx = 1\nassert x == 1\n", "outputs": [1], "execution_count": 3}
    test = msc.student_cell(sol)
    assert test["source"] == "# Your turn 2\n" and test["outputs"] == [] and test["execution_count"] is None
    md = {"cell_type": "markdown", "source": "## Q\n\n1. Why?\n\n<details><summary>Answers</summary>\n\n1. Because.\n</details>\n\n## Your turn\n"}
    assert msc.student_cell(md)["source"] == "## Q\n\n1. Why?\n\n## Your turn\n"
    assert msc.student_cell({"cell_type": "markdown", "source": "<!-- solution -->\nIt is 3."}) is None
    plain = {"cell_type": "code", "source": "# solution of the heat equation\nx = 2\n", "outputs": []}
    assert msc.student_cell(plain) is plain

def test_book_folds_solutions():
    cell = present_cell({"cell_type": "code", "source": "#| solution\n# Your turn 1\nx = 1\n", "outputs": [], "metadata": {}})
    assert cell["source"] == "# Your turn 1\nx = 1\n" and "hide-cell" in cell["metadata"]["tags"]
    assert cell["metadata"]["mystnb"]["code_prompt_show"] == "Show solution 1"
    bare = present_cell({"cell_type": "code", "source": "#| solution\nx = 1\n", "outputs": [], "metadata": {}})
    assert bare["metadata"]["mystnb"]["code_prompt_show"] == "Show solution"
    lib = present_cell({"cell_type": "code", "source": "#| export\ndef f(): pass\n", "outputs": [], "metadata": {}})
    assert lib["metadata"]["tags"] == ["hide-input"] and lib["metadata"]["mystnb"]["code_prompt_show"] == "Show library code"

def test_book_shows_types_by_their_names():
    out = {"output_type": "display_data", "data": {"text/markdown": ["def make_camera(\n", ")->__main__.Camera:"], "text/plain": "x:__main__.PSF"}}
    cell = present_cell({"cell_type": "code", "source": "show_doc(make_camera)", "outputs": [out], "metadata": {}})
    assert cell["outputs"][0]["data"] == {"text/markdown": ["def make_camera(\n", ")->Camera:"], "text/plain": "x:PSF"}

DPI = re.compile(r"""(?:\bdpi\s*=\s*|["']figure\.dpi["']\s*:\s*)(\d+)""")

@pytest.mark.parametrize("path", sorted((ROOT / "nbs").glob("*.ipynb")), ids=lambda p: p.stem)
def test_figures_readable(path):
    "Figures at 100 dpi or more (the book shows them at their pixel size: below that, legends and labels blur)."
    low = [(int(m.group(1)), _text(c)[max(0, m.start() - 40):m.end()]) for c in _cells(path) if c["cell_type"] == "code"
           for m in DPI.finditer(_text(c)) if int(m.group(1)) < 100]
    assert not low, f"{path.name}: figures below 100 dpi: {low}"
