"""Write README.md from nbs/index.ipynb, without Quarto.

Markdown cells are copied as they are; code cells (except those flagged `#| hide`) become fenced
Python blocks followed by their text output. `--check` exits 1 when README.md is out of date.
"""
import argparse, sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK, README = ROOT/"nbs"/"index.ipynb", ROOT/"README.md"
FOOTER = "\n<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n"

def _code_block(cell):
    src = "\n".join(l for l in cell.source.splitlines() if not l.startswith("#|")).strip()
    parts = [f"```python\n{src}\n```"] if src else []
    for out in cell.get("outputs", []):
        text = out.get("text") or out.get("data", {}).get("text/plain")
        if text: parts.append("```\n" + ("".join(text) if isinstance(text, list) else text).rstrip() + "\n```")
    return "\n\n".join(parts)

def render_readme(nb_path=NOTEBOOK):
    "README text made from the notebook at `nb_path`."
    nb = nbformat.read(nb_path, as_version=4)
    blocks = []
    for cell in nb.cells:
        if any(l.strip() in ("#| hide", "#|hide") for l in cell.source.splitlines()): continue
        block = cell.source.strip() if cell.cell_type == "markdown" else _code_block(cell) if cell.cell_type == "code" else ""
        if block: blocks.append(block)
    return "\n\n".join(blocks) + "\n" + FOOTER

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if README.md differs from what the notebook gives")
    args = p.parse_args(argv)
    text = render_readme()
    if args.check:
        if not README.exists() or README.read_text() != text:
            print("README.md is out of date with nbs/index.ipynb: run python tools/make_readme.py", file=sys.stderr)
            return 1
        return 0
    tmp = README.with_name(README.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(README)
    print(f"wrote {README.relative_to(ROOT)}")
    return 0

if __name__ == "__main__": sys.exit(main())
