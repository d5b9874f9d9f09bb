"""Write the book's notebooks without their solutions, for a course: students get the lessons and the exercises.

    python tools/make_student_copies.py OUT [NOTEBOOK ...]     # default: every chapter in nbs/

In each copy:
- a code cell flagged `#| solution` becomes an empty cell that keeps its `# Your turn N` line;
- a markdown cell that starts with `<!-- solution -->` (a solution's discussion) is left out;
- folded answers in markdown (`<details><summary>Answers</summary> ... </details>`) are left out;
- every other cell is kept as it is, outputs included (the figures the lesson talks about).

OUT must not exist yet, or be empty (nothing is overwritten); it is written complete or not at all. Put it beside nbs/
(e.g. `student/`) so that the notebooks find the sample data at ../data/ as they do in nbs/.
"""
import argparse, copy, json, re, shutil, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIRECTIVE = re.compile(r"^\s*#\s*\|\s*solution\s*$")
ANSWERS = re.compile(r"\n*<details>\s*<summary>\s*Answers?\s*</summary>.*?</details>[ \t]*\n?", re.S | re.I)
DISCUSSION = "<!-- solution -->"

def chapters():
    "The book's chapters: the notebooks in nbs/ whose names do not start with _ or ."
    return sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith(("_", ".")))

def _source(cell) -> str:
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s

def is_solution(cell) -> bool:
    "A cell the student copy leaves out or empties: an exercise's solution or its discussion."
    lines = _source(cell).splitlines()
    if cell.get("cell_type") == "code": return any(DIRECTIVE.match(l) for l in lines)
    return cell.get("cell_type") == "markdown" and bool(lines) and lines[0].strip() == DISCUSSION

def student_cell(cell):
    "The student's version of one cell, or None to leave it out."
    if cell.get("cell_type") == "markdown":
        if is_solution(cell): return None
        text = _source(cell)
        if not ANSWERS.search(text): return cell
        return {**cell, "source": ANSWERS.sub("\n", text).rstrip() + "\n"}
    if not is_solution(cell): return cell
    title = [l for l in _source(cell).splitlines() if l.strip().lower().startswith("# your turn")]
    return {**cell, "source": (title[0] if title else "# Your turn") + "\n", "outputs": [], "execution_count": None}

def student_notebook(nb: dict) -> dict:
    "A notebook without its solutions (see the module's doc)."
    out = copy.deepcopy(nb)
    out["cells"] = [c for c in map(student_cell, out["cells"]) if c is not None]
    return out

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder for the copies (new or empty)")
    p.add_argument("notebooks", nargs="*", type=Path, help="notebooks to copy (default: every chapter in nbs/)")
    args = p.parse_args(argv)
    out = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        sys.exit(f"{out}: exists and is not an empty folder; choose a new folder for the student copies")
    sources = args.notebooks or chapters()
    for nb_path in sources:
        if not nb_path.is_file(): sys.exit(f"{nb_path}: no such notebook; give notebooks in nbs/ or none for all chapters")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, n = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.")), 0     # beside `out`: one rename at the end
    try:
        for nb_path in sources:
            nb = json.loads(nb_path.read_text(encoding="utf-8"))
            n += sum(map(is_solution, nb["cells"]))
            (tmp / nb_path.name).write_text(json.dumps(student_notebook(nb), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists(): out.rmdir()                     # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"wrote {len(sources)} notebooks to {out}, {n} solution cells left out")

if __name__ == "__main__":
    main()
