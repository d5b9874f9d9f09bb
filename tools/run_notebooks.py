"""Execute notebooks in place so that their stored outputs (the book's figures) are fresh.

Cells flagged `#| slow` are skipped and keep their stored output unless `--slow` is given.
Usage: python tools/run_notebooks.py [--slow] [NOTEBOOK ...]   (default: every notebook in nbs/)
"""
import argparse, subprocess, sys
from pathlib import Path

from nbdev.test import test_nb

ROOT = Path(__file__).resolve().parent.parent

def notebooks():
    "Every notebook the tests execute: nbs/ and its folders, skipping names that start with _ or ."
    return sorted(p for p in (ROOT/"nbs").rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(ROOT/"nbs").parts))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", type=Path)
    p.add_argument("--slow", action="store_true", help="also run the cells flagged slow")
    args = p.parse_args(argv)
    failed = []
    for nb in [n.resolve() for n in args.notebooks] or notebooks():
        ok, secs = test_nb(nb, skip_flags=[] if args.slow else ["slow"], force_flags=["slow"] if args.slow else None, save=True)
        print(f"{'ok    ' if ok else 'FAILED'} {secs:6.1f} s  {nb.relative_to(ROOT)}")
        if not ok: failed.append(nb)
    subprocess.run([str(Path(sys.executable).parent/"nbdev-clean")], cwd=ROOT, check=True)
    return 1 if failed else 0

if __name__ == "__main__": sys.exit(main())
