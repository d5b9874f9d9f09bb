"""Execute notebooks in place so that their stored outputs (the book's figures) are fresh.

Cells flagged `#| slow` are not run and keep their stored output, unless `--slow` is given.
Usage: python tools/run_notebooks.py [--slow] [NOTEBOOK ...]   (default: every notebook in nbs/)
"""
import argparse, copy, subprocess, sys, time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent

def notebooks():
    "Every notebook the tests execute: nbs/ and its folders, skipping names that start with _ or ."
    return sorted(p for p in (ROOT/"nbs").rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(ROOT/"nbs").parts))

def _is_slow(cell):
    return cell.cell_type == "code" and any(l.replace(" ", "") == "#|slow" for l in cell.source.splitlines())

def run_notebook(path, slow=False, timeout=1200):
    "Execute the notebook at `path` in its folder and write it back with its outputs."
    nb = nbformat.read(path, as_version=4)
    run = copy.deepcopy(nb)
    skipped = [i for i, c in enumerate(run.cells) if _is_slow(c) and not slow]
    for i in skipped: run.cells[i].source = "pass  # slow cell: stored output kept"
    NotebookClient(run, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    for i, (cell, done) in enumerate(zip(nb.cells, run.cells)):
        if cell.cell_type == "code" and i not in skipped: cell.outputs, cell.execution_count = done.outputs, done.execution_count
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", type=Path)
    p.add_argument("--slow", action="store_true", help="also run the cells flagged slow")
    args = p.parse_args(argv)
    failed = []
    for nb in [n.resolve() for n in args.notebooks] or notebooks():
        start = time.time()
        try: run_notebook(nb, slow=args.slow)
        except Exception as e:
            failed.append(nb); print(f"FAILED {nb.relative_to(ROOT)}:\n{e}", file=sys.stderr)
        else: print(f"ok {time.time()-start:6.1f} s  {nb.relative_to(ROOT)}")
    subprocess.run([str(Path(sys.executable).parent/"nbdev-clean")], cwd=ROOT, check=True)
    return 1 if failed else 0

if __name__ == "__main__": sys.exit(main())
