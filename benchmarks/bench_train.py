"""Training speed of every model, and the speed of the data pipeline that feeds it.

Part 1: training samples/s of each registered model (26-px patches, f = 8, batch 16, L1L2 loss, Adam), one optimizer
step at a time through `Trainer`, on the device asked for (CPU by default).
Part 2: patches/s that the data pipeline delivers through a `DataLoader` (batch 16): `ImageDataset` reading a
memory-mapped TIFF stack and rendering the targets on the fly, with augmentation, and `SimulatedDataset` simulating every
patch. The pipeline keeps up when it delivers more patches per second than the fastest model consumes.

Usage: python benchmarks/bench_train.py [--device cpu] [--steps 3] [--threads N] [--models deep-storm srcnn] [--workers 0 2]
"""
import argparse
import itertools
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dl4smlm.data import ImageDataset, SimulatedDataset
from dl4smlm.io import save_simulation
from dl4smlm.models import list_models
from dl4smlm.simulate import SimulationConfig, simulate
from dl4smlm.checkpoint import resolve_device
from dl4smlm.train import Trainer

PATCH, F, BATCH = 26, 8, 16


def train_rate(name, data, device, steps):
    "Samples per second of full training steps (forward, loss, backward, Adam) of model `name`."
    trainer = Trainer(name, "l1l2", data, batch_size=BATCH, device=device, progress=False)
    batches = list(itertools.islice(DataLoader(data, batch_size=BATCH), steps + 1))
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    trainer._train_step(*batches[0])  # warm-up: allocations, kernel selection
    sync()
    t = time.perf_counter()
    for x, y in batches[1:steps + 1]: trainer._train_step(x, y)
    sync()
    return steps * BATCH / (time.perf_counter() - t)


def pipeline_rate(dataset, workers, batches=24):
    "Patches per second a DataLoader delivers (batch 16), after its first batch (worker start-up excluded)."
    loader = iter(DataLoader(dataset, batch_size=BATCH, num_workers=workers, shuffle=True))
    next(loader)
    t = time.perf_counter()
    for _ in range(batches): next(loader)
    return batches * BATCH / (time.perf_counter() - t)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps per model")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--models", nargs="*", default=list_models())
    p.add_argument("--workers", nargs="*", type=int, default=[0, 2])
    args = p.parse_args(argv)
    if args.threads: torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"dl4smlm training benchmark: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, device {device}")
    cfg = SimulationConfig(frames=200, height=64, width=64, density=6.0, seed=0)  # Deep-STORM's training density
    with tempfile.TemporaryDirectory() as tmp:
        save_simulation(Path(tmp), simulate(cfg))
        data = ImageDataset.from_folder(tmp, upsampling=F, patch_size=PATCH, min_emitters=7)
        print(f"\nPart 1 - training, {PATCH}-px patches, f = {F}, batch {BATCH} ({args.steps} steps after one warm-up)")
        print(f"{'model':<12} {'samples/s':>10} {'s/step':>8}")
        rates = {}
        for name in args.models:
            rates[name] = train_rate(name, data, device, args.steps)
            print(f"{name:<12} {rates[name]:>10.2f} {BATCH / rates[name]:>8.2f}", flush=True)
        print(f"\nPart 2 - data pipeline, patches/s through a DataLoader (batch {BATCH})")
        sim_data = SimulatedDataset(SimulationConfig(height=32, width=32, density=6.0, seed=0), length=4096,
                                    upsampling=F, patch_size=PATCH, min_emitters=7)
        pipes = {}
        for label, ds in (("ImageDataset (memory-mapped TIFF, targets rendered, augmented)", data),
                          ("SimulatedDataset (a new 32x32 frame simulated per patch)", sim_data)):
            for w in args.workers:
                pipes[label, w] = pipeline_rate(ds, w)
                print(f"{label:<64} workers={w}: {pipes[label, w]:>8.0f} patches/s", flush=True)
        fastest = max(rates, key=rates.get)
        slowest_pipe = min(pipes.values())
        print(f"\nfastest model: {fastest} at {rates[fastest]:.1f} samples/s; slowest pipeline: {slowest_pipe:.0f} patches/s "
              f"({slowest_pipe / rates[fastest]:.0f}x faster than the model needs)")


if __name__ == "__main__":
    main()
