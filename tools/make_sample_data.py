"""Make the small sample dataset in data/ that the book and the tests use (fixed seed: same files).

Usage: python tools/make_sample_data.py
"""
from pathlib import Path

from dl4smlm.io import save_simulation
from dl4smlm.simulate import SimulationConfig, simulate

ROOT = Path(__file__).resolve().parent.parent
# SMLM Challenge 2016-like 2D data: 64×64 px of 100 nm, σ 110 nm, EMCCD, 50 frames.
SAMPLE = SimulationConfig(frames=50, height=64, width=64, density=1.0, structure="filaments", seed=2016)

if __name__ == "__main__":
    sim = simulate(SAMPLE)
    save_simulation(ROOT/"data", sim)
    print(f"wrote {len(sim.frames)} frames and {len(sim.ground_truth)} localizations to data/")
