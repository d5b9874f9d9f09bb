"""Prediction at scale: frames/s and peak memory (max RSS of a fresh process) against stack length and frame size.

    python benchmarks/bench_predict_scale.py            # 300 and 3,000 frames × 64², 256², 512², FID-STORM ×4 and Deep-STORM ×4
    python benchmarks/bench_predict_scale.py --quick    # 30 and 60 frames × 64² and 128², FID-STORM ×4
    python benchmarks/bench_predict_scale.py --models fid-storm-x4-emccd --sizes 256 --lengths 300 3000   # one row of the table

Each run is `dl4smlm predict` in its own process on a stack made by `dl4smlm simulate` (1 emitter/µm²), so its peak memory is its own;
the time per step (read, normalise, model, localize, write, render) comes from `Prediction.seconds`. Results: benchmarks/results/predict_scale.json.
"""
import argparse, contextlib, json, resource, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHILD = """
import json, resource, sys, time
from dl4smlm.predict import predict_to_folder
model, frames, out, device = sys.argv[1:5]
t = time.perf_counter()
pred = predict_to_folder(model, frames, out, device=device, progress=False, check=False, load=False)
print(json.dumps({"seconds": time.perf_counter() - t, "steps": pred.seconds, "localizations": pred.n_localizations,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

def run(model, frames, size, device, work):
    stack = work / f"s{frames}x{size}"
    if not stack.exists():
        subprocess.run([str(Path(sys.executable).parent / "dl4smlm"), "simulate", str(stack), "--frames", str(frames), "--size", str(size)],
                       check=True, capture_output=True)
    r = subprocess.run([sys.executable, "-c", CHILD, model, str(stack / "frames.tif"), str(work / "out" / f"{model}-{frames}-{size}"), device],
                       check=True, capture_output=True, text=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return {"model": model, "frames": frames, "size": size, "device": device, "frames_per_s": frames / res["seconds"], **res}

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small version: minutes on a CPU")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", help="bundled model names (default: FID-STORM ×4 and Deep-STORM ×4)")
    p.add_argument("--sizes", nargs="+", type=int, help="frame sizes in pixels (default: 64 256 512)")
    p.add_argument("--lengths", nargs="+", type=int, help="stack lengths in frames (default: 300 3000)")
    p.add_argument("--work", help="folder for the simulated stacks, kept for later runs (default: a temporary folder)")
    p.add_argument("--out", help="results file (default: benchmarks/results/predict_scale[_quick].json)")
    args = p.parse_args()
    models = args.models or (["fid-storm-x4-emccd"] if args.quick else ["fid-storm-x4-emccd", "deep-storm-x4-emccd"])
    lengths = args.lengths or ((30, 60) if args.quick else (300, 3000))
    sizes = args.sizes or ((64, 128) if args.quick else (64, 256, 512))
    rows = []
    with (contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory()) as tmp:
        for model in models:
            for size in sizes:
                for n in lengths:
                    r = run(model, n, size, args.device, Path(tmp))
                    rows.append(r)
                    steps = ", ".join(f"{k} {v:.1f} s" for k, v in r["steps"].items())
                    print(f"{model:20s} {n:5d} × {size:3d}²: {r['frames_per_s']:7.2f} frames/s ({r['frames_per_s'] * size**2 / 64**2:7.2f} "
                          f"64²-frames/s), max RSS {r['max_rss_mb']:6.0f} MB; {steps}", flush=True)
    out = Path(args.out) if args.out else HERE / "results" / ("predict_scale_quick.json" if args.quick else "predict_scale.json")
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {out}")

if __name__ == "__main__":
    main()
