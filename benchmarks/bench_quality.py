"""Localization quality of each model on SMLM-Challenge-like EMCCD data, against the physical floor (prints markdown tables).

Data (dl4smlm.simulate defaults): 64×64 px of 100 nm, σ = 110 nm, 2,000 ± 500 photons per emitter, 20 background
photons per pixel, the SMLM Challenge 2016 EMCCD chain (QE 0.9, EM gain 300, excess noise F² = 2). Every model is
trained once by `dl4smlm.compare.compare_models` on simulated patches mixing the densities 0.5, 1, 2, 4 and 6 µm⁻²
(equal shares, the same patches for every model, Deep-STORM's L1L2 loss and Adam at 1e-3), then tested on the same
fresh frames at 0.5, 2 and 6 µm⁻². The oracle row is `OracleModel`: the ideal training target of each test frame,
i.e. the ceiling of the heat-map pipeline (grid rounding, merged peaks) before any network error.

Sizes (training budget per model, the same for all six):
  default  the CPU budget of the lesson 07a_compare's full run: f = 4, 5 epochs × 256 patches of 16 px
           (80 steps of 16), 64 validation patches, 30 test frames per density. About 15–20 min on 2 CPU cores.
           The training and the test frames at 0.5, 2 and 6 µm⁻² are those of the lesson (same settings, same seed).
  --gpu    f = 8, 10 epochs × 2,048 patches of 26 px (1,280 steps), 512 validation patches, 50 test frames:
           the budget a GPU makes affordable (minutes on one; many hours on a laptop CPU).
  --quick  deep-storm and fid-storm, f = 4, 2 epochs × 64 patches: a smoke test of the script (about a minute).
Any of the settings can be overridden (--epochs, --samples, ...).

Floors, all lateral (x and y together), in nm:
  CRLB   the Cramér–Rao lower bound √(CRLB_x² + CRLB_y²) of the matched molecules (RMS over them), with the
         camera's QE and excess noise (`dl4smlm.evaluate.simulation_crlb`): the best any unbiased estimator can do.
  grid   √2·q/√12 with q = pixel/f: the RMS error of a position rounded to the centre of its fine pixel, which is
         all that the training target (a spike on the f-grid, blurred) teaches a network.
  floor  the CRLB-plus-grid floor √(CRLB² + grid²): the two errors are independent, so their variances add.

Quality goals checked for every model: |mean dx| and |mean dy| < 2 nm at every test density (no convention offsets;
the ± is the standard error, per-axis RMSE / √TP); at 0.5 µm⁻², lateral RMSE ≤ 2 × floor. Jaccard and efficiency at
0.5, 2 and 6 µm⁻² are reported for each model (no goal is set on them).

Usage: python benchmarks/bench_quality.py [--quick | --gpu] [--device auto] [--models deep-storm fid-storm]
       [--epochs N] [--samples N] [--valid N] [--test-frames N] [--upsampling F] [--patch PX] [--seed S]
       [--workers N] [--csv results.csv] [--flip-average]
"""
import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from dl4smlm.compare import DENSITIES, OracleModel, compare_models, make_test_sets
from dl4smlm.models import list_models
from dl4smlm.simulate import SimulationConfig
from dl4smlm.checkpoint import resolve_device

TEST_DENSITIES = (0.5, 2.0, 6.0)
MEAN_ERROR_GOAL_NM, FLOOR_FACTOR_GOAL = 2.0, 2.0
SIZES = {  # upsampling, epochs, samples per epoch, validation patches, patch px, test frames per density
    "default": dict(upsampling=4, epochs=5, samples=256, valid=64, patch=16, test_frames=30),
    "gpu": dict(upsampling=8, epochs=10, samples=2048, valid=512, patch=26, test_frames=50),
    "quick": dict(upsampling=4, epochs=2, samples=64, valid=16, patch=16, test_frames=10),
}


def fmt(v, digits=1):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def standard_error(r):
    "Standard error of a mean signed error per axis: per-axis RMSE (≈ lateral / √2) over √TP."
    return r["rmse_nm"] / math.sqrt(2 * r["tp"]) if r["tp"] else float("nan")


def goals(table):
    "One row per model: the worst |mean error| over densities, RMSE / floor at 0.5 µm⁻², and whether each goal is met."
    out = []
    for model, rows in table.groupby("model", sort=False):
        worst = rows[["mean_dx_nm", "mean_dy_nm"]].abs().max().max()
        sparse = rows[rows["density"] == 0.5]
        ratio = float(sparse["rmse_over_floor"].iloc[0]) if len(sparse) else float("nan")
        out.append(dict(model=model, worst_mean_error_nm=float(worst), bias_goal_met=bool(worst < MEAN_ERROR_GOAL_NM),
                        rmse_over_floor_sparse=ratio, rmse_goal_met=bool(ratio <= FLOOR_FACTOR_GOAL)))
    return out


def write_csv(table, path):
    "Write the table atomically (a temporary file in the same folder, then os.replace)."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        table.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smoke test: 2 models, 2 short epochs")
    size.add_argument("--gpu", action="store_true", help="f = 8, 10 epochs of 2,048 patches of 26 px, 50 test frames")
    p.add_argument("--device", default="auto")
    p.add_argument("--models", nargs="*", default=None, help="default: all six (quick: deep-storm fid-storm)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--samples", type=int, default=None, help="training patches per epoch")
    p.add_argument("--valid", type=int, default=None, help="fixed validation patches")
    p.add_argument("--test-frames", type=int, default=None, help="test frames per density")
    p.add_argument("--upsampling", type=int, default=None)
    p.add_argument("--patch", type=int, default=None, help="side of the training patches, camera px")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers while training (0 on a small CPU)")
    p.add_argument("--csv", default=None, help="also write the full table here")
    p.add_argument("--flip-average", action="store_true",
                   help="also score every trained model with its outputs averaged over the four flips of each frame (rows NAME+flips)")
    args = p.parse_args(argv)
    s = dict(SIZES["quick" if args.quick else "gpu" if args.gpu else "default"])
    for k in s:
        if getattr(args, k) is not None: s[k] = getattr(args, k)
    models = args.models or (["deep-storm", "fid-storm"] if args.quick else list_models())
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    cfg = SimulationConfig()   # 64×64 px, 100 nm, σ 110 nm, 2,000 photons, background 20, EMCCD
    print(f"dl4smlm quality benchmark: device {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"data: {cfg.height}×{cfg.width} px of {cfg.pixel_nm:g} nm, σ {cfg.sigma_nm:g} nm, {cfg.photons:g} ± {cfg.photons_sd:g} photons, "
          f"background {cfg.background:g} photons/px, {cfg.camera.upper()}")
    print(f"training: f = {s['upsampling']}, {s['epochs']} epochs × {s['samples']} patches of {s['patch']} px (batch 16, L1L2, "
          f"Adam 1e-3), {s['valid']} validation patches, densities {', '.join(f'{d:g}' for d in DENSITIES)} µm⁻² mixed; "
          f"test: {s['test_frames']} frames per density, seed {args.seed}\n", flush=True)
    start = time.perf_counter()
    tests = make_test_sets(cfg, TEST_DENSITIES, s["test_frames"], args.seed)
    entries = {m: m for m in models} | {"oracle": OracleModel(tests, upsampling=s["upsampling"])}
    with tempfile.TemporaryDirectory() as tmp:
        table = compare_models(entries, cfg, densities=TEST_DENSITIES, test_frames=s["test_frames"], train_densities=DENSITIES,
                               upsampling=s["upsampling"], epochs=s["epochs"], samples_per_epoch=s["samples"],
                               valid_samples=s["valid"], batch_size=16, patch_size=s["patch"], device=device, seed=args.seed,
                               num_workers=args.workers, out_dir=tmp)
        if args.flip_average:   # the same trained checkpoints, scored again with FlipAverage
            flipped = compare_models({f"{m}+flips": Path(tmp) / f"{m}.pt" for m in models}, cfg, densities=TEST_DENSITIES,
                                     test_frames=s["test_frames"], device=device, seed=args.seed, flip_average=True)
            table = pd.concat([table, flipped], ignore_index=True)
    seconds = time.perf_counter() - start
    print("| model | density [µm⁻²] | Jaccard [%] | efficiency [%] | RMSE [nm] | CRLB [nm] | grid [nm] | floor [nm] | "
          "RMSE/floor | mean dx [nm] | mean dy [nm] | ms/frame | train [s] |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for _, r in table.iterrows():
        se = standard_error(r)
        print(f"| {r['model']} | {r['density']:g} | {fmt(r['jaccard_pct'])} | {fmt(r['efficiency_pct'])} | {fmt(r['rmse_nm'])} | "
              f"{fmt(r['crlb_nm'])} | {fmt(r['grid_nm'])} | {fmt(r['floor_nm'])} | {fmt(r['rmse_over_floor'], 2)} | "
              f"{fmt(r['mean_dx_nm'], 2)} ± {fmt(se, 2)} | {fmt(r['mean_dy_nm'], 2)} ± {fmt(se, 2)} | "
              f"{fmt(r['ms_per_frame'], 1)} | {fmt(r['train_s'], 0)} |")
    print(f"\nGoals: |mean dx|, |mean dy| < {MEAN_ERROR_GOAL_NM:g} nm at every density; "
          f"RMSE ≤ {FLOOR_FACTOR_GOAL:g} × floor at 0.5 µm⁻²\n")
    print("| model | largest abs. mean error [nm] | bias goal | RMSE / floor at 0.5 µm⁻² | RMSE goal |")
    print("|---|---|---|---|---|")
    for g in goals(table):
        verdict = lambda ok, v: "pass" if ok else "FAIL" + (" (no matches)" if math.isnan(v) else "")
        print(f"| {g['model']} | {fmt(g['worst_mean_error_nm'], 2)} | {verdict(g['bias_goal_met'], g['worst_mean_error_nm'])} | "
              f"{fmt(g['rmse_over_floor_sparse'], 2)} | {verdict(g['rmse_goal_met'], g['rmse_over_floor_sparse'])} |")
    if args.csv:
        write_csv(table, args.csv)
        print(f"\ntable written to {args.csv}")
    print(f"\n{seconds:.0f} s in all")
    return table


if __name__ == "__main__":
    main()
