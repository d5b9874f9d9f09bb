"""Benchmark the MLE fitter (dl4smlm.fit): (a) RMSE / CRLB on isolated molecules over photon counts, EMCCD and sCMOS
(goal <= 1.15); (b) frames/s on 64×64 EMCCD frames at 0.5 µm⁻² (goal >= 1,000 on a CPU), in all and per stage (detect, fit); (c) precision, recall and
Jaccard at 0.2 µm⁻² (goal precision >= 99 %) and across densities 0.1–6 µm⁻². Writes benchmarks/results/bench_fit.json.

Usage: python benchmarks/bench_fit.py [--quick] [--speed-only] [--device cpu] [--threads N] [--out FILE]
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dl4smlm.evaluate import assess, match_localizations, simulation_crlb
import dl4smlm.fit as fit_module
from dl4smlm.fit import fit_frames, isolated_stack
from dl4smlm.files import write_json
from dl4smlm.simulate import SimulationConfig, simulate

OUT = Path(__file__).resolve().parent / "results" / "bench_fit.json"


def precision(quick, device):
    "RMSE per axis over the mean per-axis CRLB of isolated molecules."
    rows = []
    for camera in ("emccd", "scmos"):
        for i, photons in enumerate((500, 1000, 2000, 5000) if quick else (200, 500, 1000, 2000, 5000, 10000)):
            s = isolated_stack(frames=10 if quick else 40, photons=photons, camera=camera, seed=i)
            fits = fit_frames(s.frames, s.camera, sigma_nm=110.0, device=device)
            p = match_localizations(s.ground_truth, fits)
            rmse = float(np.sqrt(np.mean(np.r_[p["dx [nm]"], p["dy [nm]"]] ** 2)))
            bound = float(np.sqrt(np.mean(simulation_crlb(s.ground_truth, s.config)[p["truth"]] ** 2)))
            rows.append({"camera": camera, "photons": photons, "molecules": len(s.ground_truth), "found_pct": 100 * len(p) / len(s.ground_truth),
                         "rmse_nm": rmse, "crlb_nm": bound, "rmse_over_crlb": rmse / bound,
                         "mean_uncertainty_nm": float(fits.loc[p["localization"], "uncertainty [nm]"].mean())})
    return rows


class _StageClock:
    "Times `dl4smlm.fit`'s detect and fit stages inside the real `fit_frames`, by wrapping the module's functions while active."
    STAGES = {"detect": "detect_candidates", "fit": "mle_fit"}

    def __init__(self, device):
        self.sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
        self.seconds = dict.fromkeys(self.STAGES, 0.0)

    def _wrap(self, stage, fn):
        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.seconds[stage] += time.perf_counter() - start
            return out
        return timed

    def __enter__(self):
        self.saved = {name: getattr(fit_module, name) for name in self.STAGES.values()}
        for stage, name in self.STAGES.items(): setattr(fit_module, name, self._wrap(stage, self.saved[name]))
        return self

    def __exit__(self, *exc):
        for name, fn in self.saved.items(): setattr(fit_module, name, fn)


def speed(quick, device, repeats=3):
    """Frames per second, best of `repeats` runs, σ given (no estimation pass): in all, and per stage (detect: the
    difference-of-Gaussians filter and local maxima; fit: the MLE fits; other: ADU → photons, ROIs, starting values, table)."""
    s = simulate(SimulationConfig(frames=200 if quick else 1000, density=0.5, seed=1))
    fit_frames(s.frames[:50], s.camera, sigma_nm=110.0, device=device)            # warm-up
    best = dict(total=np.inf, detect=np.inf, fit=np.inf, other=np.inf)
    for _ in range(repeats):
        with _StageClock(device) as clock:
            start = time.perf_counter()
            fits = fit_frames(s.frames, s.camera, sigma_nm=110.0, device=device)
            total = time.perf_counter() - start
        times = dict(total=total, **clock.seconds, other=total - sum(clock.seconds.values()))
        best = {k: min(best[k], times[k]) for k in best}
    n = len(s.frames)
    return {"frames": n, "size": "64x64", "density": 0.5, "localizations": len(fits), "seconds": best["total"],
            "frames_per_s": n / best["total"], "localizations_per_s": len(fits) / best["total"],
            "stage_seconds": {k: best[k] for k in ("detect", "fit", "other")},
            "stage_frames_per_s": {k: n / best[k] for k in ("detect", "fit", "other")},
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def detection(quick, device):
    rows = []
    for d in (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 6.0):
        s = simulate(SimulationConfig(frames=50 if quick else 300, density=d, seed=int(1000 * d)))
        fits = fit_frames(s.frames, s.camera, device=device)                       # σ measured on the frames
        m = assess(s.ground_truth, fits, (6400, 6400), crlb_nm=simulation_crlb(s.ground_truth, s.config))
        rows.append({"density": d, "sigma_nm": float(fits["sigma [nm]"].iloc[0]) if len(fits) else None,
                     **{k: m[k] for k in ("tp", "fp", "fn", "precision_pct", "recall_pct", "jaccard_pct", "rmse_nm", "crlb_nm",
                                          "mean_dx_nm", "mean_dy_nm")}})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer frames and photon counts (about 20 s)")
    p.add_argument("--speed-only", action="store_true", help="only (b), the frames/s")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads while fitting (default: dl4smlm.fit.FIT_THREADS, 1); 0: torch's choice, one per core")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.threads is not None: fit_module.FIT_THREADS = args.threads or None
    threads = fit_module.FIT_THREADS or torch.get_num_threads()
    result = {"quick": args.quick, "device": args.device, "torch_threads": threads, "cpu_count": os.cpu_count(),
              "machine": platform.processor() or platform.machine()}
    if not args.speed_only: report_precision(result, args)
    result["speed"] = speed(args.quick, args.device)
    sp = result["speed"]
    print(f"\nspeed: {sp['frames']} frames 64×64 at 0.5 µm⁻² in {sp['seconds']:.2f} s: {sp['frames_per_s']:.0f} frames/s, "
          f"{sp['localizations_per_s']:.0f} localizations/s ({result['torch_threads']} torch threads)")
    print("  per stage: " + ", ".join(f"{k} {v:.3f} s = {sp['stage_frames_per_s'][k]:.0f} frames/s" for k, v in sp["stage_seconds"].items())
          + (f"; load average {sp['load_average'][0]:.1f}" if sp["load_average"] else ""))
    if not args.speed_only: report_detection(result, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"\nwritten {args.out}")


def report_precision(result, args):
    result["precision"] = precision(args.quick, args.device)
    print(f"{'camera':7s}{'photons':>8s}{'found %':>9s}{'RMSE nm':>9s}{'CRLB nm':>9s}{'RMSE/CRLB':>10s}{'unc. nm':>9s}")
    for r in result["precision"]:
        print(f"{r['camera']:7s}{r['photons']:8d}{r['found_pct']:9.1f}{r['rmse_nm']:9.2f}{r['crlb_nm']:9.2f}"
              f"{r['rmse_over_crlb']:10.3f}{r['mean_uncertainty_nm']:9.2f}")


def report_detection(result, args):
    result["detection"] = detection(args.quick, args.device)
    print(f"\n{'density':>8s}{'σ nm':>7s}{'prec %':>8s}{'recall %':>9s}{'Jaccard %':>10s}{'RMSE nm':>9s}{'CRLB nm':>9s}")
    for r in result["detection"]:
        print(f"{r['density']:8.1f}{r['sigma_nm']:7.1f}{r['precision_pct']:8.2f}{r['recall_pct']:9.2f}{r['jaccard_pct']:10.2f}"
              f"{r['rmse_nm']:9.2f}{r['crlb_nm']:9.2f}")


if __name__ == "__main__":
    main()
