#!/usr/bin/env bash
# The whole test suite, in order: notebooks clean, package in sync, pytest (which executes every
# notebook, skipping cells flagged `slow`), the book, and the book opened in headless Chromium. Run tools/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg PYTHONHASHSEED=0

snapshot() { find "$@" -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/_build/*' \
               -not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' | sort | xargs md5sum; }
unchanged() {  # unchanged WHAT CMD... : run CMD, fail if it changed files under WHAT
  local what=$1; shift
  local before; before=$(snapshot "$what")
  "$@"
  if [ "$before" != "$(snapshot "$what")" ]; then
    echo "FAILED: '$*' changed $what/ — run it and commit the result"; git status --short -- "$what" || true
    exit 1
  fi
}

echo "== 1/5 nbdev-clean leaves nbs/ unchanged"
unchanged nbs nbdev-clean
echo "== 2/5 nbdev-export leaves dl4smlm/ unchanged (notebooks and package in sync)"
unchanged dl4smlm nbdev-export
echo "== 3/5 pytest"
bash tools/fetch_mathjax.sh   # the book's MathJax (npm, cached in nbs/_vendor/): tests/test_book.py typesets a page with it
# Two processes, one thread each (and in every process they start): with as many busy threads as cores, torch's many tiny
# ops no longer wait on descheduled or spinning threads of the other worker (the losses chapter: 42 s alone, 305 s without).
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m pytest -n 2 --durations=15 "$@"
echo "== 4/5 the book (Jupyter Book, warnings are errors)"
# Offline-complete: MathJax comes from npm once (cached in nbs/_vendor/, git-ignored) and is served
# from the book's _static/ (fetched before the tests, above); nbs/_ext/dl4smlm_book.py hides nbdev directives and folds exported code.
rm -rf nbs/_build
jupyter-book build nbs --warningiserror --keep-going --quiet
echo "== 5/5 the book in a real browser (headless Chromium, every page: nothing from another host, no raw LaTeX, no #|, images, no sideways scroll)"
if command -v chromium >/dev/null && command -v chromedriver >/dev/null || [ -n "${CI:-}" ]; then
  python tools/check_book.py   # in CI a missing Chromium fails here, with the line that says what to install
else
  echo "skipped: Debian's chromium and chromium-driver are not installed (tools/setup.sh installs them as root); CI runs this check"
fi
echo "== all checks passed; the book is at nbs/_build/html/index.html"
