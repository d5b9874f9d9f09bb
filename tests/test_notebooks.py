"""Every notebook executes from top to bottom through nbdev's runner (cells flagged `slow` skipped)."""
import os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/"nbs"
NOTEBOOKS = sorted(p for p in NBS.rglob("*.ipynb")
                   if not any(part.startswith(("_", ".")) for part in p.relative_to(NBS).parts))

def test_notebooks_found():
    assert (NBS/"index.ipynb") in NOTEBOOKS and len(NOTEBOOKS) >= 2

@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[str(p.relative_to(NBS)) for p in NOTEBOOKS])
def test_notebook_runs(nb):
    # One process per notebook, as `nbdev-test` does, so notebooks cannot leak state into each other.
    # Under pytest-xdist each worker's notebook gets one thread per library: with as many workers as cores, two-thread torch
    # ops would wait on descheduled threads (the many tiny ops of the losses chapter took 8 times longer).
    env = dict(os.environ)
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) >= (os.cpu_count() or 1):
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    nbdev_test = Path(sys.executable).parent/"nbdev-test"
    r = subprocess.run([str(nbdev_test), str(nb)], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, f"{nb.name} failed:\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}"
