"""Distillation measured: a student ≥ 5× faster than FID-STORM ×4, trained alone, with hints, and with knowledge transfer.

Teacher: the bundled fid-storm-x4-emccd (converged: 20 epochs × 2,048 patches, calibrated). Student: FID-STORM with 6 blocks
of 32 channels and a sub-pixel (pixel-shuffle) upsampler, `FIDSTORM(4, blocks=6, width=32, upsampler="shuffle")`: every
convolution on the camera grid, 60,576 parameters, 0.25 GMAC per 64 × 64 frame (the teacher: 393,680 and 1.83).
Data: the teacher's training distribution (16-px patches of 32 × 32 simulated EMCCD frames, density 0.1–6 µm⁻², photons
500–5,000, background 5–100, σ 90–130 nm), in the teacher's input transform. Three ways to train the student, on the same
budget (16 epochs × 1,024 items, Adam 1e-3, batch 16, the best-validation weights on 256 fixed patches):
  alone      Trainer, L1L2 loss;
  hints      3 epochs of attentive hint learning (student 'body' ← teacher 'body' through a 1×1 regressor), then the task (L1L2);
  transfer   knowledge transfer with the attentive imitation loss, α = 0.5, the teacher's own loss (L1L2) as distance.
Two regimes:
  plentiful  every epoch brings 1,024 freshly simulated labelled patches (labels are free in simulation);
  few        128 labelled patches (fixed) plus 896 fresh unlabelled patches per epoch that only the teacher can label: the
             student alone and the task stage see the 128 again and again (same number of steps); hint stage 1 and knowledge
             transfer use the unlabelled ones too (the teacher's prediction is their label, with Φ = 1).
Each (regime, method) runs with seeds 0, 1, 2 (weights and data). Every model is calibrated like the bundled ones (threshold and
the 3×3 window of the teacher, on 12 simulated stacks, seed 1) and scored on the 14 test stacks of bench_generalization.py. Speed: ms per 64 × 64 frame
from raw frame to localizations (`dl4smlm.localize.predict`), teacher and student alternately in this process, best of 5.

    python benchmarks/bench_distill.py [--epochs 16] [--items 1024] [--seeds 0 1 2] [--quick] [--timing-only]

Runs are cached in benchmarks/_work/distill/ (a stopped benchmark resumes). Results: benchmarks/results/bench_distill.json.
"""
import argparse, dataclasses, importlib.util, json, time, warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from dl4smlm.calibrate import calibrate, calibration_stacks
from dl4smlm.data import SimulatedDataset
from dl4smlm.distill import hint_training, knowledge_transfer
from dl4smlm.localize import predict
from dl4smlm.models import count_macs, count_parameters, get_model, optimize_for_inference
from dl4smlm.pretrained import PRETRAINED
from dl4smlm.simulate import SimulationConfig, simulate
from dl4smlm.checkpoint import load_model
from dl4smlm.train import Trainer

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work" / "distill"
spec = importlib.util.spec_from_file_location("bench_generalization", HERE / "bench_generalization.py")
gen = importlib.util.module_from_spec(spec); spec.loader.exec_module(gen)
TEACHER = "fid-storm-x4-emccd"
STUDENT = dict(blocks=6, width=32, upsampler="shuffle")
METHODS, REGIMES = ("alone", "hints", "transfer"), ("plentiful", "few")


class Repeated(Dataset):
    "`data` cycled to `length` items per epoch: a small labelled set seen as often as the others' data."
    def __init__(self, data, length):
        self.data, self.length = data, int(length)
        self.upsampling, self.normalizer, self.target = data.upsampling, data.normalizer, data.target
        self.metadata = dict(getattr(data, "metadata", {}) or {})
    def set_epoch(self, epoch): self.data.set_epoch(epoch)
    def __len__(self): return self.length
    def __getitem__(self, i): return self.data[i % len(self.data)]


def datasets(teacher, seed, items, labelled, quick):
    r = PRETRAINED[TEACHER]
    cfg = SimulationConfig(**r["simulation"])
    kw = dict(ranges=r["ranges"], upsampling=4, patch_size=r["patch_size"], min_emitters=0, normalizer=teacher.normalizer)
    valid = SimulatedDataset(cfg, 64 if quick else 256, fixed=True, seed=999, **kw)
    plenty = SimulatedDataset(cfg, items, seed=100 + seed, **kw)
    few = SimulatedDataset(cfg, labelled, fixed=True, augment=True, seed=200 + seed, **kw)
    free = SimulatedDataset(cfg, items - labelled, seed=300 + seed, **kw)
    return valid, plenty, few, free


def train_one(regime, method, seed, teacher, epochs, items, labelled, quick):
    valid, plenty, few, free = datasets(teacher, seed, items, labelled, quick)
    run = dict(batch_size=16, lr=1e-3, device="cpu", progress=False, seed=seed, early_stopping=None)
    student = get_model("fid-storm", 4, seed=seed, **STUDENT)
    hint_epochs = min(3, epochs - 1)
    task = plenty if regime == "plentiful" else Repeated(few, items)
    t = time.perf_counter()
    if method == "alone":
        tr = Trainer(student, "l1l2", task, valid, epochs=epochs, **run)
        tr.fit(); student.load_state_dict(tr.best_state)
    elif method == "hints":
        labelled_part, unlabelled = (plenty, None) if regime == "plentiful" else (few, free)
        res = hint_training(student, teacher, labelled_part, valid, unlabelled=unlabelled, guided="body", hint="body",
                            hint_epochs=hint_epochs, epochs=0, **run)
        tr = Trainer(res.student.train(), "l1l2", task, valid, epochs=epochs - hint_epochs, **run)
        tr.fit(); student = res.student; student.load_state_dict(tr.best_state)
    else:
        labelled_part, unlabelled = (plenty, None) if regime == "plentiful" else (few, free)
        res = knowledge_transfer(student, teacher, labelled_part, valid, unlabelled=unlabelled, epochs=epochs, alpha=0.5, **run)
        student = res.student
    seconds = time.perf_counter() - t
    student.normalizer = teacher.normalizer
    return student.eval(), seconds


def calibrated(model):
    r = PRETRAINED[TEACHER]
    stacks = calibration_stacks(SimulationConfig(**r["simulation"]), r["ranges"], seed=1)
    model.calibration = calibrate(model, model.normalizer, stacks, radii=(1,))   # the teacher's window (3×3); thresholds swept
    return model


def scores(model, tests):
    cal = model.calibration
    rows = []
    for name, (cfg, sim) in tests.items():
        norm = model.normalizer.with_camera(sim.camera.to_dict()) if hasattr(model.normalizer, "with_camera") else model.normalizer
        from dl4smlm.calibrate import heatmaps
        h = heatmaps(model, norm, sim.frames)
        rows.append({"condition": name, **gen.score(model, cfg, sim, h, cal["threshold"], cal["radius"], cal["bias_nm"])})
    return rows


def timing(teacher, student, repeats=5, frames=100):
    "ms per 64 × 64 frame, raw frame to localizations (batch norm folded), teacher and student alternately; best of `repeats`."
    sim = simulate(dataclasses.replace(gen.BASE, density=1.0, frames=frames, seed=5))
    best = {"teacher": np.inf, "student": np.inf}
    models = {"teacher": optimize_for_inference(teacher), "student": optimize_for_inference(student)}   # as `dl4smlm predict` runs them
    for _ in range(repeats):
        for name, m in models.items():
            c = m.calibration
            t = time.perf_counter()
            predict(m, sim.frames, m.normalizer, pixel_nm=100.0, threshold=c["threshold"], radius=c["radius"], device="cpu", progress=False)
            best[name] = min(best[name], 1000 * (time.perf_counter() - t) / frames)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--items", type=int, default=1024, help="patches per epoch")
    p.add_argument("--labelled", type=int, default=128, help="labelled patches in the 'few' regime")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--quick", action="store_true", help="2 epochs of 128 patches, one seed, fewer stacks: a smoke test, not a result")
    p.add_argument("--timing-only", action="store_true", help="only the speed comparison (run it on a quiet machine)")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    if a.quick: a.epochs, a.items, a.labelled, a.seeds = 2, 128, 32, [0]
    work = WORK / ("quick" if a.quick else f"e{a.epochs}-n{a.items}-l{a.labelled}")
    work.mkdir(parents=True, exist_ok=True)
    teacher = load_model(TEACHER)
    probe = get_model("fid-storm", 4, **STUDENT)
    sizes = {"teacher": {"parameters": count_parameters(teacher), "gmacs_64": count_macs(teacher) / 1e9},
             "student": {"parameters": count_parameters(probe), "gmacs_64": count_macs(probe) / 1e9}}
    out = HERE / "results" / ("bench_distill_quick.json" if a.quick else "bench_distill.json")
    if a.timing_only:
        student = get_model("fid-storm", 4, **STUDENT)   # a trained student, with the calibration stored for it
        student.load_state_dict(torch.load(work / "few-transfer-s0.pt", weights_only=True))
        student.normalizer, student.calibration = teacher.normalizer, json.loads((work / "few-transfer-s0.json").read_text())["calibration"]
        ms = timing(teacher, student.eval())
        print(f"ms per 64×64 frame: teacher {ms['teacher']:.1f}, student {ms['student']:.1f}: {ms['teacher'] / ms['student']:.1f}× faster")
        res = json.loads(out.read_text()) if out.is_file() else {}
        res["timing_ms_per_frame"], res["timing_threads"] = ms, torch.get_num_threads()
        out.write_text(json.dumps(res, indent=1) + "\n"); return
    tests = {name: (cfg, simulate(cfg)) for name, cfg in gen.conditions(a.quick).items()}
    rows, seconds = [], {}
    cached = work / "teacher.json"
    if not cached.is_file(): cached.write_text(json.dumps(scores(teacher, tests)))
    rows += [{"regime": "teacher", "method": "teacher", "seed": 0, **r} for r in json.loads(cached.read_text())]
    for regime in REGIMES:
        for method in METHODS:
            for seed in a.seeds:
                cached = work / f"{regime}-{method}-s{seed}.json"
                if not cached.is_file():
                    model, s = train_one(regime, method, seed, teacher, a.epochs, a.items, a.labelled, a.quick)
                    model = calibrated(model)
                    cached.write_text(json.dumps({"seconds": s, "calibration": {k: model.calibration[k] for k in ("threshold", "radius", "jaccard_pct")},
                                                  "rows": scores(model, tests)}))
                    torch.save(model.state_dict(), work / f"{regime}-{method}-s{seed}.pt")
                    print(f"{regime} {method} seed {seed}: trained in {s / 60:.1f} min", flush=True)
                c = json.loads(cached.read_text())
                seconds[f"{regime}-{method}-s{seed}"] = c["seconds"]
                rows += [{"regime": regime, "method": method, "seed": seed, **r} for r in c["rows"]]
    df = pd.DataFrame(rows)
    summary = df.groupby(["regime", "method", "condition"], sort=False)["jaccard_pct"].agg(["mean", "std", "min", "max"]).round(1)
    wide = df.pivot_table(index="condition", columns=["regime", "method"], values="jaccard_pct", aggfunc="mean", sort=False).round(1)
    spread = df.pivot_table(index="condition", columns=["regime", "method"], values="jaccard_pct", aggfunc=lambda v: v.max() - v.min(), sort=False).round(1)
    print("### Jaccard [%], mean over seeds\n\n" + wide.to_markdown() + "\n\n### spread over seeds (max − min)\n\n" + spread.to_markdown() + "\n")
    rmse = df.pivot_table(index="condition", columns=["regime", "method"], values="rmse_nm", aggfunc="mean", sort=False).round(1)
    print("### RMSE [nm], mean over seeds\n\n" + rmse.to_markdown() + "\n")
    res = json.loads(out.read_text()) if out.is_file() else {}
    res.update({"epochs": a.epochs, "items": a.items, "labelled": a.labelled, "seeds": a.seeds, "student": STUDENT, "sizes": sizes,
                "train_seconds": seconds, "rows": df.to_dict("records"), "summary": summary.reset_index().to_dict("records")})
    out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
