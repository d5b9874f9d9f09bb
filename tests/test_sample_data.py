"""data/ holds the sample dataset exactly as tools/make_sample_data.py makes it (fixed seed)."""
import runpy
from pathlib import Path

import numpy as np
import pandas as pd

from dl4smlm.io import load_simulation, save_simulation
from dl4smlm.simulate import simulate

ROOT = Path(__file__).resolve().parent.parent

def test_sample_data_is_reproducible(tmp_path):
    sample = runpy.run_path(str(ROOT/"tools"/"make_sample_data.py"))["SAMPLE"]
    save_simulation(tmp_path, simulate(sample))
    shipped, fresh = load_simulation(ROOT/"data"), load_simulation(tmp_path)
    assert shipped.config == fresh.config == sample
    np.testing.assert_array_equal(np.asarray(shipped.frames), np.asarray(fresh.frames))
    pd.testing.assert_frame_equal(shipped.ground_truth, fresh.ground_truth)

def test_sample_data_is_small():
    assert sum(f.stat().st_size for f in (ROOT/"data").iterdir()) < 1_000_000
