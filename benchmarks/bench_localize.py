"""Speed of localization, rendering, prediction and evaluation (prints its figures).

Usage: python benchmarks/bench_localize.py [--device auto] [--frames 10000]
"""
import argparse, os, time

import numpy as np
import pandas as pd
import torch

from dl4smlm.evaluate import assess
from dl4smlm.localize import localize_heatmaps, predict, render_gaussian
from dl4smlm.models import get_model
from dl4smlm.checkpoint import resolve_device


def timed(fn, repeat=3):
    "Best wall time of `repeat` runs, and the last result."
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter(); out = fn(); best = min(best, time.perf_counter() - t)
    return best, out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=10_000, help="frames of the evaluation table")
    args = p.parse_args()
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, device {device}")

    # evaluation: a 64×64-px field (6.4 µm), 30 molecules per frame, 90 % found with 30 nm errors, 5 false per frame
    n, k = args.frames, 30
    fr = np.repeat(np.arange(1, n + 1), k)
    gt = pd.DataFrame({"frame": fr, "x [nm]": rng.uniform(0, 6400, fr.size), "y [nm]": rng.uniform(0, 6400, fr.size)})
    kept = gt[rng.random(len(gt)) < 0.9]
    fp = pd.DataFrame({"frame": rng.integers(1, n + 1, 5 * n), "x [nm]": rng.uniform(0, 6400, 5 * n), "y [nm]": rng.uniform(0, 6400, 5 * n)})
    locs = pd.concat([kept.assign(**{"x [nm]": kept["x [nm]"] + rng.normal(0, 30, len(kept)),
                                     "y [nm]": kept["y [nm]"] + rng.normal(0, 30, len(kept))}), fp], ignore_index=True)
    for method in ("greedy", "hungarian"):
        t, m = timed(lambda: assess(gt, locs, (6400, 6400), method=method), repeat=2)
        print(f"assess ({method}): {n} frames, {len(gt)} molecules, {len(locs)} localizations: {t:.2f} s "
              f"(JI {m['jaccard_pct']:.1f} %, RMSE {m['rmse_nm']:.1f} nm)")

    # localization of heat maps: 64×64-px frames at f = 8 (512×512 fine pixels), 30 peaks each
    maps = torch.zeros(64, 512, 512)
    idx = torch.randint(3, 509, (64, 30, 2), generator=torch.Generator().manual_seed(0))
    maps[torch.arange(64)[:, None], idx[..., 0], idx[..., 1]] = 100.0
    maps = torch.nn.functional.avg_pool2d(maps[:, None], 3, 1, 1)[:, 0].to(device)
    t, l = timed(lambda: localize_heatmaps(maps, 8))
    print(f"localize_heatmaps: 64 maps of 512×512 on {device}: {t * 1e3:.0f} ms ({64 / t:.0f} maps/s, {len(l)} localizations)")

    # Gaussian rendering of a million localizations at 10 nm pixels
    big = pd.DataFrame({"x [nm]": rng.uniform(0, 6400, 10 ** 6), "y [nm]": rng.uniform(0, 6400, 10 ** 6)})
    t, _ = timed(lambda: render_gaussian(big, (6400, 6400), 10, sigma_nm=20), repeat=1)
    print(f"render_gaussian: 1,000,000 localizations, 640×640 px of 10 nm, σ 20 nm: {t:.2f} s")

    # prediction with an (untrained) Deep-STORM: 64×64-px frames at f = 8, and the cost of tiling at f = 4
    norm = lambda x: (x - 50) / 7
    model = get_model("deep-storm", upsampling=8, seed=0)
    frames = rng.poisson(50, (8, 64, 64)).astype(np.uint16)
    predict(model, frames[:1], norm, device=device, progress=False)                       # warm-up
    t, _ = timed(lambda: predict(model, frames, norm, device=device, progress=False), repeat=1)
    print(f"predict deep-storm f=8, 8 frames of 64×64 px on {device}: {t / 8 * 1e3:.0f} ms/frame")
    model = get_model("deep-storm", upsampling=4, seed=0)
    frames = rng.poisson(50, (2, 128, 128)).astype(np.uint16)
    for tile, overlap in ((128, 16), (64, 16), (48, 8)):
        t, _ = timed(lambda: predict(model, frames, norm, tile=tile, overlap=overlap, device=device, progress=False), repeat=1)
        print(f"predict deep-storm f=4, 2 frames of 128×128 px, tile {tile}, overlap {overlap} on {device}: {t / 2 * 1e3:.0f} ms/frame")

if __name__ == "__main__":
    main()
