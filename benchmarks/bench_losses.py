"""The three losses at their default λ, on one budget: FID-STORM ×4 trained with L1L2, weighted MSE and weighted MAE.

Each model follows the recipe of the bundled fid-storm-x4-emccd (20 epochs × 2,048 fresh 16-px patches of 32 × 32 simulated
EMCCD frames, density 0.1–6 µm⁻², photons 500–5,000, background 5–100, σ 90–130 nm, Adam 1e-3, batch 16, seed 0), changing only
the loss; the L1L2 model *is* the bundled one (made by tools/train_pretrained.py with that recipe). Every model is calibrated the
same way (threshold and window on 12 simulated stacks), then scored on the test stacks of bench_generalization.py (never
trained or calibrated on). Goal: each loss within 5 Jaccard points of L1L2 at 0.5 and 2 emitters/µm².

    python benchmarks/bench_losses.py [--epochs 20] [--quick]

Trained models are cached in benchmarks/_work/ (delete them to retrain). Results: benchmarks/results/bench_losses.json.
"""
import argparse, importlib.util, json, sys, time, warnings
from pathlib import Path

import torch

from dl4smlm.pretrained import PRETRAINED
from dl4smlm.simulate import SimulationConfig, simulate

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("bench_generalization", HERE / "bench_generalization.py")
gen = importlib.util.module_from_spec(spec); spec.loader.exec_module(gen)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20, help="epochs of 2,048 patches (20: the bundled model's budget)")
    p.add_argument("--quick", action="store_true", help="2 epochs and fewer test stacks: a smoke test, not a result")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    r = PRETRAINED["fid-storm-x4-emccd"]
    epochs = 2 if a.quick else a.epochs
    common = dict(simulate_config=SimulationConfig(**r["simulation"], seed=r["seed"]), model=r["model"], upsampling=r["upsampling"],
                  epochs=epochs, ranges=r["ranges"], batch_size=r["batch_size"], lr=r["lr"], samples_per_epoch=r["samples_per_epoch"],
                  patch_size=r["patch_size"], seed=r["seed"])
    models = {"l1l2": "fid-storm-x4-emccd"} if epochs == r["epochs"] else {"l1l2": gen._train(f"loss-l1l2-fid-storm-x4-e{epochs}", loss="l1l2", **common)}
    seconds = {}
    for loss in ("wmse", "wmae"):
        t = time.perf_counter()
        models[loss] = gen._train(f"loss-{loss}-fid-storm-x4-e{epochs}", loss=loss, **common)
        seconds[loss] = time.perf_counter() - t
    tests = {name: (cfg, simulate(cfg)) for name, cfg in gen.conditions(a.quick).items()}
    df = gen.evaluate(models, tests, fixed=False)
    for value in ("jaccard_pct", "precision_pct", "recall_pct", "rmse_nm"):
        print(f"### {value}\n\n{gen.table(df, value)}\n")
    j = df.pivot_table(index="condition", columns="model", values="jaccard_pct", sort=False)
    gaps = {loss: {c: float(j.loc[c, loss] - j.loc[c, "l1l2"]) for c in j.index} for loss in ("wmse", "wmae")}
    for loss, g in gaps.items():
        key = [c for c in g if c in ("uniform 0.5/µm²", "uniform 2/µm²")]
        print(f"{loss}: Jaccard − L1L2's at {', '.join(key)}: {', '.join(f'{g[c]:+.1f}' for c in key)} points "
              f"({'goal met' if all(g[c] >= -5 for c in key) else 'goal NOT met'}: within 5)")
    out = HERE / "results" / ("bench_losses_quick.json" if a.quick else "bench_losses.json")
    out.write_text(json.dumps({"epochs": epochs, "train_seconds": seconds, "threads": torch.get_num_threads(),
                               "rows": df.to_dict("records"), "jaccard_gap_vs_l1l2": gaps}, indent=1, default=float) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
