"""Results on data a model has never seen: the bundled models (and the ablations below) tested on shifted conditions.

Test stacks, all made fresh by dl4smlm's simulator (64 × 64 px of 100 nm, EMCCD unless said, σ 110 nm, 2,000 ± 600 photons,
background 20 photons/px; frames per stack chosen for about 400 scored molecules, 10–150 frames):
  density 0.1, 0.5, 2 and 6 µm⁻², uniform and on filaments;
  at 1 µm⁻² (uniform): photons ×0.5 and ×2, background ×3, σ −15 % and +15 %, an sCMOS camera instead of the EMCCD.
Models:
  every bundled model (`dl4smlm models`), with its calibrated threshold, window and bias, and with the fixed
  `DEFAULT_THRESHOLD` (3×3 window, no bias correction): "calibrated" against "fixed";
  min–max: FID-STORM ×4 trained with the recipe of the bundled fid-storm-x4-emccd but Deep-STORM's per-frame min–max input
  (and calibrated the same way): "min–max" against "photons" at the same budget;
  exact: FID-STORM ×8 trained at one density with the exact test conditions (EMCCD, σ 110 nm, 2,000 ± 600 photons, background
  20), one model per test density, for the goal "bundled ×8 within 10 % of the efficiency of a model trained for the test
  conditions". Budget: --exact-epochs × 2,048 patches (default 10, half of the bundled model's).
The trained ablations are cached in benchmarks/_work/ (delete it to retrain). Output: a markdown table per section and,
with --csv, every row. The CRLB column is the RMS Cramér–Rao bound of the matched molecules (lateral, nm).

Usage: python benchmarks/bench_generalization.py [--quick] [--csv out.csv] [--no-ablations] [--exact-epochs N]
"""
import argparse
import dataclasses
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dl4smlm.calibrate import calibrate_checkpoint, heatmaps
from dl4smlm.evaluate import assess, simulation_crlb
from dl4smlm.localize import DEFAULT_THRESHOLD, ideal_peak, localize_heatmaps
from dl4smlm.pretrained import PRETRAINED, bundled_models
from dl4smlm.simulate import SimulationConfig, simulate
from dl4smlm.checkpoint import load_checkpoint, load_model
from dl4smlm.workflow import train_from_folder

WORK = Path(__file__).resolve().parent / "_work"
BASE = SimulationConfig(height=64, width=64, photons=2000.0, photons_sd=600.0, background=20.0, sigma_nm=110.0, camera="emccd")


def _frames_for(density, target=400, low=10, high=150):
    inner = (6.4 - 0.9) ** 2
    return int(np.clip(math.ceil(target / (density * inner)), low, high))


def conditions(quick=False):
    "{name: SimulationConfig} of every test stack."
    out = {}
    densities = (0.5, 6.0) if quick else (0.1, 0.5, 2.0, 6.0)
    for structure in ("uniform", "filaments"):
        for d in densities:
            out[f"{structure} {d:g}/µm²"] = dataclasses.replace(BASE, structure=structure, density=d, frames=_frames_for(d), seed=100 + len(out))
    at1 = dataclasses.replace(BASE, density=1.0, frames=_frames_for(1.0))
    shifts = {"photons ×0.5": dict(photons=1000.0, photons_sd=300.0), "photons ×2": dict(photons=4000.0, photons_sd=1200.0),
              "background ×3": dict(background=60.0), "σ −15 %": dict(sigma_nm=93.5), "σ +15 %": dict(sigma_nm=126.5),
              "sCMOS camera": dict(camera="scmos")}
    for name, ch in (list(shifts.items())[:2] if quick else shifts.items()):
        out[name] = dataclasses.replace(at1, seed=200 + len(out), **ch)
    return out


def score(model, cfg, sim, h, threshold, radius, bias, refine_radius=None):
    "SMLM Challenge metrics of heat maps `h` localized with one setting."
    f = h.shape[-1] // cfg.width
    locs = localize_heatmaps(h, f, cfg.pixel_nm, threshold=threshold, radius=radius, refine_radius=refine_radius)
    if bias is not None:
        locs["x [nm]"] -= bias[0]; locs["y [nm]"] -= bias[1]
    m = assess(sim.ground_truth, locs, (cfg.width * cfg.pixel_nm, cfg.height * cfg.pixel_nm), crlb_nm=simulation_crlb(sim.ground_truth, cfg))
    return {k: m[k] for k in ("precision_pct", "recall_pct", "jaccard_pct", "rmse_nm", "crlb_nm", "efficiency_pct", "mean_dx_nm", "mean_dy_nm")}


def evaluate(models, tests, fixed=True):
    "One row per (model, condition, threshold kind)."
    rows = []
    for label, source in models.items():
        ck = load_checkpoint(source)
        model = load_model(source)
        cal = ck.get("calibration") or {}
        for name, (cfg, sim) in tests.items():
            norm = model.normalizer
            if hasattr(norm, "with_camera"): norm = norm.with_camera(sim.camera.to_dict())   # the stack's own calibration
            h = heatmaps(model, norm, sim.frames)
            settings = {"calibrated": (cal["threshold"], cal["radius"], cal["bias_nm"], cal.get("refine_radius"))} if cal else {}
            if fixed or not cal:
                settings["fixed"] = (DEFAULT_THRESHOLD * ideal_peak(ck["target"]) / ideal_peak({"kind": "heatmap"}), 1, None, None)
            for kind, (t, r, b, rr) in settings.items():
                rows.append({"model": label, "condition": name, "threshold": kind, **score(model, cfg, sim, h, t, r, b, rr)})
    return pd.DataFrame(rows)


def _train(name, **kw):
    "A cached ablation model, trained and calibrated once."
    WORK.mkdir(exist_ok=True)
    out = WORK / f"{name}.pt"
    if out.is_file() and (load_checkpoint(out).get("calibration") is not None): return out
    start = time.perf_counter()
    train_from_folder(out=out, overwrite=True, device="cpu", early_stopping=None, valid=0.1, test=0.0, progress=False, calibrate=False, **kw)
    calibrate_checkpoint(out, device="cpu", seed=1)
    print(f"trained {name} in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return out


def ablations(exact_epochs, quick=False, exact_densities=(0.1, 0.5, 2.0, 6.0)):
    r = PRETRAINED["fid-storm-x4-emccd"]
    common = dict(loss=r["loss"], batch_size=r["batch_size"], lr=r["lr"], samples_per_epoch=r["samples_per_epoch"], patch_size=r["patch_size"],
                  seed=r["seed"])
    epochs = 2 if quick else r["epochs"]
    models = {"min–max fid-storm ×4": _train(f"minmax-fid-storm-x4-e{epochs}", simulate_config=SimulationConfig(**r["simulation"], seed=r["seed"]),
                                             model=r["model"], upsampling=r["upsampling"], epochs=epochs,
                                             ranges=r["ranges"], normalization="min-max", **common)}
    epochs = 2 if quick else exact_epochs
    for d in ((0.5,) if quick else exact_densities):
        cfg = dataclasses.replace(BASE, height=32, width=32, density=d, seed=r["seed"])
        models[f"exact {d:g}/µm² fid-storm ×8"] = _train(f"exact-{d:g}-fid-storm-x8-e{epochs}", simulate_config=cfg, model="fid-storm",
                                                         upsampling=8, epochs=epochs, min_emitters=0, **common)
    return models


def table(df, value):
    "Conditions as rows, one column per model and threshold kind."
    t = df.pivot_table(index="condition", columns=["model", "threshold"], values=value, sort=False)
    t.columns = [f"{m} ({k})" for m, k in t.columns]
    return t.round(1).to_markdown()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer conditions and 2-epoch ablations: a smoke test")
    p.add_argument("--no-ablations", action="store_true", help="only the bundled models")
    p.add_argument("--exact-epochs", type=int, default=10)
    p.add_argument("--exact-densities", type=float, nargs="+", default=[0.1, 0.5, 2.0, 6.0], help="densities of the exact-condition models")
    p.add_argument("--csv", default=None)
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    tests = {name: (cfg, simulate(cfg)) for name, cfg in conditions(a.quick).items()}
    models = {n: n for n in bundled_models()}
    if not a.no_ablations: models.update(ablations(a.exact_epochs, a.quick, tuple(a.exact_densities)))
    start = time.perf_counter()
    df = evaluate(models, tests)
    print(f"evaluated {len(models)} models on {len(tests)} stacks in {(time.perf_counter() - start) / 60:.1f} min "
          f"({torch.get_num_threads()} threads)\n")
    if a.csv: df.to_csv(a.csv, index=False)
    for value in ("precision_pct", "recall_pct", "jaccard_pct", "efficiency_pct", "rmse_nm", "mean_dx_nm", "mean_dy_nm"):
        print(f"### {value}\n\n{table(df, value)}\n")
    crlb = df.groupby("condition", sort=False)["crlb_nm"].mean().round(1)
    print(f"### CRLB (nm, lateral RMS over the matched molecules)\n\n{crlb.to_markdown()}\n")


if __name__ == "__main__":
    main()
