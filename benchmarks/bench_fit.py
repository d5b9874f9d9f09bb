"""Benchmark the MLE fitter (dl4smlm.fit): (a) RMSE / CRLB on isolated molecules over photon counts, EMCCD and sCMOS
(goal <= 1.15); (b) frames/s on 64×64 EMCCD frames at 0.5 µm⁻² (goal >= 1,000 on a CPU), in all and per stage (detect, fit); (c) precision, recall and
Jaccard at 0.2 µm⁻² (goal precision >= 99 %) and across densities 0.1–6 µm⁻², σ measured and fitted (the default) and σ given;
(d) other photons, backgrounds, σ and cameras at 0.5 µm⁻²; (e) a real-looking sCMOS (per-pixel maps, 1 % noisy and 12 hot pixels)
read with a spec-sheet gain 4× off, with the camera model's noise / without bad pixels / without filters and as fit_frames does it
(issue 21 item 3); (f) the quality filters' settings swept (σ range, signal_llr); (g) frames from an independent simulator
(smappy-smlm's camera_frames, in the side environment /work/side-env when it is there; goal: sparse precision >= 95 %);
(h) the real stacks of data/real against their reference localizations. Writes benchmarks/results/bench_fit.json.

Usage: python benchmarks/bench_fit.py [--quick] [--speed-only] [--device cpu] [--threads N] [--out FILE]
"""
import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import torch
from scipy.optimize import linear_sum_assignment

from dl4smlm.evaluate import assess, match_localizations, simulation_crlb
import dl4smlm.fit as fit_module
from dl4smlm.camera import SCMOSMapCamera, make_camera
from dl4smlm.crlb import crlb
from dl4smlm.fit import NO_FILTERS, FitFilters, fit_frames, isolated_stack
from dl4smlm.files import write_json
from dl4smlm.simulate import SimulationConfig, expected_photons, simulate

ROOT = Path(__file__).resolve().parent.parent
SIDE = Path(os.environ.get("DL4SMLM_SIDE_ENV", "/work/side-env"))
METRICS = ("tp", "fp", "fn", "precision_pct", "recall_pct", "jaccard_pct", "rmse_nm", "crlb_nm")

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


def _scores(truth, fits, field, bound=None):
    m = assess(truth, fits, field, crlb_nm=bound)
    return {k: m.get(k) for k in METRICS}


def detection(quick, device):
    "Across densities: σ not given (measured, then fitted per molecule: the default) and σ given (fixed)."
    rows = []
    for d in (0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 6.0):
        s = simulate(SimulationConfig(frames=50 if quick else 300, density=d, seed=int(1000 * d)))
        bound = simulation_crlb(s.ground_truth, s.config)
        for mode, kw in (("σ fitted", {}), ("σ given", {"sigma_nm": 110.0})):
            fits = fit_frames(s.frames, s.camera, device=device, **kw)
            rows.append({"density": d, "mode": mode, "sigma_nm": fits.attrs["psf_sigma_nm"], "sigma_nm_median": fits.attrs["sigma_nm_median"],
                         "noise_scale": fits.attrs["noise_scale_median"], **_scores(s.ground_truth, fits, (6400, 6400), bound)})
    return rows


CONDITIONS = [dict(camera="emccd"), dict(camera="scmos"), dict(photons=500.0, photons_sd=125.0), dict(photons=5000.0, photons_sd=1250.0),
              dict(background=5.0), dict(background=100.0), dict(sigma_nm=90.0), dict(sigma_nm=150.0),
              dict(camera="scmos", photons=500.0, photons_sd=125.0, background=5.0)]


def conditions(quick, device):
    "Other photons, backgrounds, σ and cameras at 0.5 µm⁻² (and 0.1), σ measured (the default)."
    rows = []
    for i, c in enumerate(CONDITIONS):
        for d in (0.1, 0.5):
            s = simulate(SimulationConfig(frames=40 if quick else 150, density=d, seed=300 + 10 * i + int(10 * d), **c))
            fits = fit_frames(s.frames, s.camera, device=device)
            rows.append({"condition": ", ".join(f"{k}={v:g}" if not isinstance(v, str) else f"{k}={v}" for k, v in c.items()), "density": d,
                         "sigma_nm": fits.attrs["psf_sigma_nm"], **_scores(s.ground_truth, fits, (6400, 6400), simulation_crlb(s.ground_truth, s.config))})
    return rows


def real_looking_chip(h, w, rng):
    "A real sCMOS: per-pixel offset (±2 ADU), gain (±3 %), read noise (log-normal, 1 % of the pixels 3–10× noisier), 12 hot pixels."
    gain = 2.17 * (1 + rng.normal(0, 0.03, (h, w)))
    read = 1.6 * np.exp(rng.normal(0, 0.25, (h, w)))
    noisy = rng.random((h, w)) < 0.01
    read[noisy] *= rng.uniform(3, 10, noisy.sum())
    dark = np.zeros((h, w), np.float32)
    dark[rng.integers(0, h, 12), rng.integers(0, w, 12)] = rng.uniform(20, 400, 12)
    return SCMOSMapCamera(100 + rng.normal(0, 2, (h, w)), (read * gain) ** 2, gain, qe=0.8), dark


def real_camera(quick, device):
    "(e) the real-looking sCMOS, read with the spec sheet's gain 4× off; what each part of item 3 does."
    rows, rng = [], np.random.default_rng(21)
    chip, dark = real_looking_chip(64, 64, rng)
    spec = make_camera("scmos", e_per_adu=4 * 0.46, qe=0.8)
    modes = {"camera model's noise, all pixels, no filters": dict(camera=spec, measure_noise=False, bad_pixels=False, filters=NO_FILTERS),
             "measured noise only": dict(camera=spec, bad_pixels=False, filters=NO_FILTERS),
             "measured noise + bad pixels": dict(camera=spec, filters=NO_FILTERS),
             "fit_frames, spec-sheet camera": dict(camera=spec),
             "fit_frames, per-pixel calibration": dict(camera=chip)}
    for d, photons in ((0.1, 1000.0), (0.1, 300.0), (1.0, 1000.0), (4.0, 1000.0)):
        cfg = SimulationConfig(frames=40 if quick else 100, density=d, photons=photons, photons_sd=photons / 4, background=20.0, camera="scmos",
                               seed=int(100 * d + photons))
        truth = simulate(cfg).ground_truth
        raw = chip.apply(expected_photons(truth, cfg) + dark / chip.qe, rng)
        bound = simulation_crlb(truth, cfg)
        for label, kw in modes.items():
            fits = fit_frames(raw, pixel_nm=100.0, device=device, **kw)
            rows.append({"density": d, "photons": photons, "mode": label, "localizations": len(fits), "noise_scale": fits.attrs["noise_scale_median"],
                         "bad_pixels": fits.attrs["bad_pixels"], "sigma_nm": fits.attrs["psf_sigma_nm"], **_scores(truth, fits, (6400, 6400), bound)})
    return rows


def filter_sweep(quick, device):
    "(f) the σ range's upper end across densities, and signal_llr's minimum at 200 photons and on noise alone."
    rows = []
    for d in (0.1, 1.0, 4.0):
        s = simulate(SimulationConfig(frames=40 if quick else 100, density=d, seed=int(100 * d)))
        every = fit_frames(s.frames, s.camera, device=device, filters=NO_FILTERS)
        rel = every["sigma [nm]"] / every.attrs["psf_sigma_nm"]
        for hi in (1.4, 1.6, 2.0, np.inf):
            kept = every[(rel >= 0.5) & (rel <= hi) & (every["signal_llr"] >= 20) & (every["uncertainty [nm]"] <= every.attrs["psf_sigma_nm"])]
            rows.append({"sweep": "sigma_high", "density": d, "value": hi if np.isfinite(hi) else None, **_scores(s.ground_truth, kept, (6400, 6400))})
    for camera in ("emccd", "scmos"):
        iso = isolated_stack(frames=20 if quick else 40, photons=200, camera=camera, seed=1)
        noise = simulate(SimulationConfig(frames=100 if quick else 400, density=0.0, camera=camera, background=2.0, seed=2))
        a = fit_frames(iso.frames, iso.camera, sigma_nm=110.0, device=device, filters=NO_FILTERS)
        b = fit_frames(noise.frames, noise.camera, sigma_nm=110.0, device=device, filters=NO_FILTERS)
        for v in (0, 16, 20, 25, 30):
            found = len(match_localizations(iso.ground_truth, a[a["signal_llr"] >= v])) / len(iso.ground_truth)
            rows.append({"sweep": "min_signal_llr", "camera": camera, "value": v, "found_pct_200_photons": 100 * found,
                         "noise_fp_per_frame_bg2": float((b["signal_llr"] >= v).sum() / len(noise.frames))})
    return rows


_SMAPPY = r'''
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np
from smappy.simulate import camera_frames, LabellingSettings
a = json.loads(sys.argv[1]); out = a.pop("out"); eff = a.pop("efficiency")
frames, truth = camera_frames(labelling=LabellingSettings(efficiency=eff), **a)
c = truth.columns
np.savez(out, frames=frames, frame=np.asarray(c["frame"]), x_nm=np.asarray(c["x_nm"]), y_nm=np.asarray(c["y_nm"]), photons=np.asarray(c["photons"]),
         background=np.asarray(c["background"]))
'''


def independent(quick, device):
    "(g) frames from smappy-smlm's simulator (blinking labels on its demo structure, its own sCMOS-like camera): densities, photons, σ."
    py = SIDE / "bin" / "python"
    if not (SIDE / "READY").exists() or not py.exists(): return None
    rows = []
    grid = [dict(efficiency=e) for e in (0.03, 0.3, 1.0)] + [dict(efficiency=0.03, photons=1500.0), dict(efficiency=0.03, background=50.0),
                                                              dict(efficiency=0.03, sigma_nm=100.0), dict(efficiency=0.03, pixelsize_nm=160.0)]
    with tempfile.TemporaryDirectory() as tmp:
        for i, g in enumerate(grid):
            args = {**dict(n_frames=60 if quick else 200, seed=40 + i, size_px=64, photons=5000.0, background=20.0, sigma_nm=130.0, pixelsize_nm=100.0,
                           conversion=0.5, offset=100.0, read_noise=1.5), **g}
            args["out"] = str(Path(tmp) / f"s{i}.npz")
            r = subprocess.run([str(py), "-c", _SMAPPY, json.dumps(args)], capture_output=True, text=True, timeout=600)
            if r.returncode != 0: return [{"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "smappy failed"}]
            d = np.load(args["out"])
            px = args["pixelsize_nm"]                                           # smappy: pixel centres at integers → ours + ½ pixel
            truth = pd.DataFrame({"frame": d["frame"] + 1, "x [nm]": d["x_nm"] + px / 2, "y [nm]": d["y_nm"] + px / 2,
                                  "intensity [photon]": d["photons"]})
            keep = (truth["intensity [photon]"] > 0) & truth["x [nm]"].between(0, 64 * px) & truth["y [nm]"].between(0, 64 * px)   # in the field
            truth, bg = truth[keep].reset_index(drop=True), d["background"][keep]
            cam = make_camera("scmos", qe=1.0, e_per_adu=args["conversion"], baseline=args["offset"], read_noise=args["read_noise"])
            fits = fit_frames(d["frames"], cam, px, device=device)
            bound = crlb(truth["intensity [photon]"].to_numpy(), bg, args["sigma_nm"], px)
            density = len(truth) / args["n_frames"] / (64 * 64 * px * px / 1e6)
            rows.append({**{k: v for k, v in args.items() if k != "out"}, "density": density, "sigma_fitted_nm": fits.attrs["sigma_nm_median"],
                         **_scores(truth, fits, (64 * px, 64 * px), bound)})
    return rows


def _matched(a, b, radius=1.0):
    n = 0
    for k in np.intersect1d(a["frame"].unique(), b["frame"].unique()):
        pa, pb = a[a["frame"] == k][["x_px", "y_px"]].to_numpy(), b[b["frame"] == k][["x_px", "y_px"]].to_numpy()
        dist = np.hypot(*(pa[:, None, :] - pb[None, :, :]).transpose(2, 0, 1))
        r, c = linear_sum_assignment(np.where(dist <= radius, dist, 1e6))
        n += int((dist[r, c] <= radius).sum())
    return n


def real_stacks(device):
    "(h) data/real: counts in the 6-px window and the share of each reference matched within one pixel (its frames only)."
    rows = []
    for meta_path in sorted((ROOT / "data" / "real").glob("*/meta.json")):
        meta, folder = json.loads(meta_path.read_text()), meta_path.parent
        frames = tifffile.imread(folder / meta["frames"])
        frames = frames[None] if frames.ndim == 2 else frames
        c, px = meta["camera"], meta["pixel_nm"]
        cam = make_camera(c["type"], **{k: c[k] for k in ("baseline", "e_per_adu", "em_gain", "qe") if k in c})
        fits = fit_frames(frames, cam, px, device=device)
        t = pd.DataFrame({"frame": fits["frame"] - 1, "x_px": fits["x [nm]"] / px - 0.5, "y_px": fits["y [nm]"] / px - 0.5})
        h, w = frames.shape[1:]
        win = lambda d: d[(d.x_px >= 5.5) & (d.x_px <= w - 6.5) & (d.y_px >= 5.5) & (d.y_px <= h - 6.5)]
        row = {"stack": folder.name, "frames": len(frames), "localizations": len(fits), "in_window": len(win(t)),
               "sigma_nm": fits.attrs["psf_sigma_nm"], "sigma_nm_range": fits.attrs["sigma_nm_range"], "noise_scale": fits.attrs["noise_scale_median"],
               "bad_pixels": fits.attrs["bad_pixels"]}
        for name, rel in meta["references"].items():
            ref = win(pd.read_csv(folder / rel))
            only = meta["reference_frames"].get(name)
            mine = win(t) if only is None else win(t)[win(t)["frame"].isin(only)]
            n = _matched(mine, ref)
            row[name] = {"reference": len(ref), "fit": len(mine), "matched": n, "jaccard_pct": 100 * n / max(len(mine) + len(ref) - n, 1)}
        rows.append(row)
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
    print(f"\n{'density':>8s} {'mode':9s}{'σ nm':>7s}{'prec %':>8s}{'recall %':>9s}{'Jaccard %':>10s}{'RMSE nm':>9s}{'CRLB nm':>9s}")
    for r in result["detection"]:
        print(f"{r['density']:8.1f} {r['mode']:9s}{r['sigma_nm']:7.1f}{r['precision_pct']:8.2f}{r['recall_pct']:9.2f}{r['jaccard_pct']:10.2f}"
              f"{r['rmse_nm']:9.2f}{r['crlb_nm']:9.2f}")
    show = lambda title, rows, cols: print(f"\n{title}\n" + pd.DataFrame(rows)[cols].round(2).to_string(index=False))
    result["conditions"] = conditions(args.quick, args.device)
    show("(d) conditions, σ measured", result["conditions"], ["condition", "density", "sigma_nm", "precision_pct", "recall_pct", "rmse_nm", "crlb_nm"])
    result["real_camera"] = real_camera(args.quick, args.device)
    show("(e) a real-looking sCMOS (per-pixel maps, hot pixels) read with a spec-sheet gain 4× off", result["real_camera"],
         ["density", "photons", "mode", "localizations", "noise_scale", "bad_pixels", "precision_pct", "recall_pct", "rmse_nm", "crlb_nm"])
    result["filters"] = filter_sweep(args.quick, args.device)
    f = pd.DataFrame(result["filters"])
    print("\n(f) quality filters\n" + f[f["sweep"] == "sigma_high"][["density", "value", "precision_pct", "recall_pct", "jaccard_pct", "rmse_nm"]].round(2).to_string(index=False))
    print(f[f["sweep"] == "min_signal_llr"][["camera", "value", "found_pct_200_photons", "noise_fp_per_frame_bg2"]].round(3).to_string(index=False))
    result["independent"] = independent(args.quick, args.device)
    if result["independent"] is None: print("\n(g) independent simulator: skipped (no side environment with smappy-smlm)")
    elif "error" in result["independent"][0]: print(f"\n(g) independent simulator: {result['independent'][0]['error']}")
    else: show("(g) smappy-smlm's simulator", result["independent"], ["efficiency", "photons", "background", "sigma_nm", "pixelsize_nm", "density",
                                                                      "sigma_fitted_nm", "precision_pct", "recall_pct", "jaccard_pct", "rmse_nm", "crlb_nm"])
    result["real"] = real_stacks(args.device)
    print("\n(h) data/real against the shipped references")
    for r in result["real"]:
        refs = "; ".join(f"{k}: {v['matched']}/{v['reference']} matched, fit {v['fit']}, Jaccard {v['jaccard_pct']:.0f} %"
                         for k, v in r.items() if isinstance(v, dict))
        print(f"  {r['stack']}: {r['localizations']} localizations ({r['in_window']} in the window), σ {r['sigma_nm']:.0f} nm, "
              f"noise ×{r['noise_scale']:.2f}, {r['bad_pixels']} bad pixels; {refs}")


if __name__ == "__main__":
    main()
