#!/usr/bin/env bash
# Set up dl4smlm in its own virtual environment, .venv/, beside this folder.
#
# PyTorch: a torch that is already importable (in .venv, or in the Python that runs this script)
# is kept. Where none is, the CPU build is installed first, so that the range in pyproject.toml
# never pulls a multi-GB CUDA build onto a CPU-only machine. Set TORCH_SPEC (e.g. "torch==2.5.1")
# or TORCH_INDEX_URL to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "setup: reusing the torch of $PYTHON (venv with system site-packages)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  spec=${TORCH_SPEC:-torch==2.13.0}
  echo "setup: no torch found, installing the CPU build ($spec)"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "${PIP[@]}" install -q "$spec" --index-url "$TORCH_INDEX_URL"
  elif [ "$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    # A CPU build from local wheels (find-links) if there is one, else PyTorch's CPU index.
    "${PIP[@]}" install -q --no-index "$spec" 2>/dev/null \
      || "${PIP[@]}" install -q "$spec" --index-url https://download.pytorch.org/whl/cpu --timeout 30 --retries 1 \
      || "${PIP[@]}" install -q "$spec"
  else
    "${PIP[@]}" install -q "$spec"
  fi
fi

# Debian's Chromium and its driver, for the book's real-browser check (tools/check_book.py, step 5 of tools/test.sh):
# installed with apt-get as root, or through sudo without a password; otherwise only a note (CI fails that step).
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  apt=()
  if [ "$(id -u)" = 0 ]; then apt=(apt-get); elif sudo -n true 2>/dev/null; then apt=(sudo -n apt-get); fi
  if [ ${#apt[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium and chromium-driver (for tools/check_book.py)"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq chromium chromium-driver >/dev/null \
      || echo "setup: could not install chromium and chromium-driver; tools/test.sh will skip the browser check (CI fails it)"
  else
    echo "setup: chromium and chromium-driver are missing and cannot be installed here (not root, no sudo);" \
         "install them to run tools/check_book.py (CI fails without them)"
  fi
fi

# Install the package (editable) with the tools for the book and the tests; skipped when nothing changed.
stamp="$VENV/.dl4smlm-setup"
want=$(cat pyproject.toml | cksum)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VENV/bin/python" -c "import dl4smlm" >/dev/null 2>&1; then
  echo "setup: installing dl4smlm and its tools into $VENV"
  "${PIP[@]}" install -q -e ".[dev]"
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" -c "import torch, dl4smlm; print(f'setup: dl4smlm {dl4smlm.__version__}, torch {torch.__version__} in $VENV')"
