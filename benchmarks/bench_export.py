"""Frames per second of the bundled models on the CPU: PyTorch (as `predict_checkpoint` runs them) against their exports run
in TorchScript and onnxruntime, on 64×64 and 256×256 frames. Prints a table, writes benchmarks/results/bench_export.json.

Usage: python benchmarks/bench_export.py [--models fid-storm-x4-emccd deep-storm-x4-emccd] [--frames 32] [--threads N]
"""
import argparse, json, os, platform, tempfile, time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from dl4smlm.export import export_checkpoint
from dl4smlm.models import optimize_for_inference
from dl4smlm.simulate import SimulationConfig, simulate
from dl4smlm.checkpoint import load_checkpoint, load_model

OUT = Path(__file__).resolve().parent / "results" / "bench_export.json"


def frames_per_second(run, frames, batch, repeat=3):
    "Best of `repeat` passes over `frames` in batches of `batch` (after one warm-up batch)."
    run(frames[:batch])
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for a in range(0, len(frames), batch): run(frames[a:a + batch])
        best = min(best, time.perf_counter() - t)
    return len(frames) / best


def runners(name, folder, threads):
    "name → callable on float32 (n, 1, H, W) ADU arrays returning heat maps, for PyTorch, TorchScript and onnxruntime."
    model = load_model(name)
    fused = optimize_for_inference(model)                 # what predict_checkpoint runs: batch norm folded, channels-last
    ts = torch.jit.load(str(folder / "model.torchscript.pt"))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def pytorch(x):
        with torch.inference_mode(): return fused(model.normalizer(torch.from_numpy(x))).numpy()
    def torchscript(x):
        with torch.inference_mode(): return ts(torch.from_numpy(x)).numpy()
    return {"pytorch": pytorch, "torchscript": torchscript, "onnxruntime": lambda x: session.run(None, {"frames": x})[0]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["fid-storm-x4-emccd", "fid-storm-x8-emccd", "deep-storm-x4-emccd"])
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 256])
    p.add_argument("--frames", type=int, default=32, help="frames per size (a quarter of them at 256 px and above)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            folder = Path(tmp) / name
            t = time.perf_counter()
            r = export_checkpoint(name, folder)
            print(f"{name}: exported in {time.perf_counter() - t:.0f} s, max |difference| "
                  + ", ".join(f"{k} {v:.2g}" for k, v in r["max_abs_difference"].items()))
            run = runners(name, folder, args.threads)
            cam = load_checkpoint(name)["simulation"]["camera"]
            for side in args.sizes:
                n = args.frames if side < 256 else max(args.batch, args.frames // 4)
                x = simulate(SimulationConfig(frames=n, height=side, width=side, density=1.0, camera=cam, seed=1), workers=1).frames
                x = x.astype(np.float32)[:, None]
                batch = args.batch if side < 256 else max(1, args.batch // 4)
                row = {"model": name, "frame_px": side, "frames": n, "batch": batch}
                row.update({f"{k}_fps": round(frames_per_second(f, x, batch), 2) for k, f in run.items()})
                rows.append(row)
                print(f"  {side}×{side}: " + ", ".join(f"{k} {row[k + '_fps']:.1f} frames/s" for k in run))
    print(f"\n{'model':<22}{'frames':>8}{'PyTorch':>10}{'TorchScript':>13}{'onnxruntime':>13}   (frames/s)")
    for r in rows:
        print(f"{r['model']:<22}{str(r['frame_px']) + '²':>8}{r['pytorch_fps']:>10.1f}{r['torchscript_fps']:>13.1f}{r['onnxruntime_fps']:>13.1f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    result = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "threads": args.threads, "cpus": os.cpu_count(),
              "note": "PyTorch as predict_checkpoint runs the model (batch norm folded, channels-last), untiled; frames/s, best of 3",
              "rows": rows}
    tmp = OUT.with_name(f".{OUT.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, OUT)
    print(f"written {OUT}")


if __name__ == "__main__":
    main()
