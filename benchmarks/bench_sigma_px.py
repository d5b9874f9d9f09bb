"""How fast accuracy falls when the PSF width in pixels leaves a model's training range: the measurement behind the σ
tolerance of the range check (issue 21, item 5).

Test stacks: dl4smlm's simulator, 64 × 64 px of 100 nm, EMCCD, 1 emitter/µm² (uniform), 2,000 ± 600 photons, background
20 photons/px, σ from 0.5 to 2.2 px (50–220 nm), about 400 scored molecules each. Models: the bundled fid-storm-x4-emccd
(trained on σ 0.9–1.3 px) with its calibration, and any checkpoint given with --extra LABEL=PATH (calibrated first if it
has no calibration). Prints Jaccard, efficiency and RMSE against σ in pixels, with the CRLB.

Usage: python benchmarks/bench_sigma_px.py [--extra wide=path/to/model.pt ...] [--csv out.csv]
"""
import argparse, dataclasses, sys, time, warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generalization import BASE, _frames_for, evaluate, table   # the same scoring as the generalization benchmark

from dl4smlm.calibrate import calibrate_checkpoint
from dl4smlm.checkpoint import load_checkpoint
from dl4smlm.simulate import simulate

SIGMAS_PX = (0.5, 0.6, 0.7, 0.8, 0.9, 1.1, 1.3, 1.45, 1.6, 1.8, 2.0, 2.2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--extra", nargs="*", default=[], help="LABEL=CHECKPOINT, more models to test")
    p.add_argument("--csv", default=None)
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    models = {"fid-storm-x4-emccd": "fid-storm-x4-emccd"}
    for item in a.extra:
        label, path = item.split("=", 1)
        if load_checkpoint(path).get("calibration") is None: calibrate_checkpoint(path, device="cpu", seed=1)
        models[label] = path
    at1 = dataclasses.replace(BASE, density=1.0, frames=_frames_for(1.0))
    tests = {f"σ {s:.2f} px": (cfg, simulate(cfg)) for i, s in enumerate(SIGMAS_PX)
             for cfg in [dataclasses.replace(at1, sigma_nm=100.0 * s, seed=300 + i)]}
    start = time.perf_counter()
    df = evaluate(models, tests, fixed=False)
    print(f"evaluated {len(models)} models on {len(tests)} stacks in {(time.perf_counter() - start) / 60:.1f} min\n")
    if a.csv: df.to_csv(a.csv, index=False)
    for value in ("precision_pct", "recall_pct", "jaccard_pct", "efficiency_pct", "rmse_nm"):
        print(f"### {value}\n\n{table(df, value)}\n")
    crlb = df.groupby("condition", sort=False)["crlb_nm"].mean().round(1)
    print(f"### CRLB (nm, lateral RMS over the matched molecules)\n\n{crlb.to_markdown()}\n")


if __name__ == "__main__":
    main()
