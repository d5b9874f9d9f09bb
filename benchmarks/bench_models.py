"""CPU inference speed of the six SMLM models, against a plain convolution and a matmul measured in the same run.

For each model and upsampling factor f (8 and 4): trainable parameters, GMAC per 64×64 frame (counted by
`dl4smlm.models.count_macs`), milliseconds per frame at batch 1 and 16 under `torch.inference_mode`, the
achieved GFLOP/s (2 FLOP per MAC) and that as a fraction of the reference. The models run as
`optimize_for_inference` makes them (BatchNorm folded into the convolutions, weights and input
channels-last); the plain eval-mode model at batch 1 is timed too, for comparison.

Memory: at batch 16 the feature maps are hundreds of MB, and glibc's malloc gives such blocks back to
the system on every free, so each forward pass page-faults its memory in again (most of the time of
an upsampling or pooling layer at that size). Unless `--system-malloc` is given, the script tells glibc
(through `mallopt`) to serve all allocations from its heap and keep freed memory, the effect a
caching allocator such as jemalloc or tcmalloc has; PyTorch's CPU performance guide recommends one.

Reference: the faster of a 64→64 3×3 convolution on a 256×256 map (batch 1, contiguous and
channels-last) and a 2048×2048 float32 matmul, each measured before and after the models; the best
of those is the reference, so the fractions are conservative.

Usage: python benchmarks/bench_models.py [--threads 2] [--repeats 5] [--models deep-storm fid-storm] [--system-malloc]
"""
import argparse
import ctypes
import sys
import time

import torch
import torch.nn.functional as F

from dl4smlm.models import count_macs, count_parameters, get_model, list_models, optimize_for_inference


def keep_freed_memory() -> bool:
    "Make glibc's malloc serve every block from its heap and never trim it (M_MMAP_MAX = 0, M_TRIM_THRESHOLD = max)."
    if not sys.platform.startswith("linux"): return False
    try: libc = ctypes.CDLL("libc.so.6")
    except OSError: return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def best_time(fn, repeats: int, min_seconds: float = 0.5) -> float:
    "Smallest wall time of `fn()` over at least `repeats` calls (and at least `min_seconds` in all), after a warm-up."
    fn()
    times, start = [], time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return min(times)


def reference(repeats: int) -> dict[str, float]:
    "GFLOP/s of a plain 64→64 3×3 convolution on 256×256 (contiguous, channels-last) and of a 2048² matmul."
    out = {}
    with torch.inference_mode():
        x = torch.randn(1, 64, 256, 256); w = torch.randn(64, 64, 3, 3); b = torch.randn(64)
        flop = 2 * 64 * 64 * 9 * 256 * 256
        out["conv 64→64 3×3, 256², NCHW"] = flop / best_time(lambda: F.conv2d(x, w, b, padding=1), repeats) / 1e9
        xc, wc = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
        out["conv 64→64 3×3, 256², channels-last"] = flop / best_time(lambda: F.conv2d(xc, wc, b, padding=1), repeats) / 1e9
        a, c = torch.randn(2048, 2048), torch.randn(2048, 2048)
        out["matmul 2048²"] = 2 * 2048 ** 3 / best_time(lambda: a @ c, repeats) / 1e9
    return out


def bench_model(name: str, factor: int, repeats: int) -> dict:
    "Parameters, GMAC per 64×64 frame and timings of model `name` at upsampling `factor`."
    model = get_model(name, upsampling=factor, seed=0).eval()
    macs = count_macs(model, 64, 64)
    fast = optimize_for_inference(model)
    row = dict(model=name, f=factor, params=count_parameters(model), gmac=macs / 1e9)
    with torch.inference_mode():
        for batch in (1, 16):
            x = torch.randn(batch, 1, 64, 64).contiguous(memory_format=torch.channels_last)
            t = best_time(lambda: fast(x), repeats if batch == 1 else max(2, repeats // 2))
            row[f"ms{batch}"] = 1e3 * t / batch
            row[f"gflops{batch}"] = 2 * macs * batch / t / 1e9
        x = torch.randn(1, 1, 64, 64)
        row["ms_plain"] = 1e3 * best_time(lambda: model(x), repeats)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement; the best is kept")
    p.add_argument("--models", nargs="*", default=list_models(), help=f"subset of {list_models()}")
    p.add_argument("--factors", nargs="*", type=int, default=[8, 4])
    p.add_argument("--system-malloc", action="store_true", help="leave glibc's malloc as it is (no `mallopt`)")
    args = p.parse_args(argv)
    tuned = False if args.system_malloc else keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ref_before = reference(args.repeats)
    rows = [bench_model(name, f, args.repeats) for name in args.models for f in args.factors]
    ref_after = reference(args.repeats)
    refs = {k: max(ref_before[k], ref_after[k]) for k in ref_before}
    conv_ref = max(v for k, v in refs.items() if k.startswith("conv"))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, `torch.inference_mode`, "
          f"malloc {'keeps freed memory (mallopt)' if tuned else 'as the system sets it'}\n")
    print("| reference | GFLOP/s (before / after the models) |\n|---|---|")
    for k in refs: print(f"| {k} | {ref_before[k]:.1f} / {ref_after[k]:.1f} |")
    print(f"\nConvolution reference: {conv_ref:.1f} GFLOP/s; matmul: {refs['matmul 2048²']:.1f} GFLOP/s.\n")
    print("| model | f | parameters | GMAC / 64×64 frame | ms/frame B=1 | ms/frame B=16 | GFLOP/s B=1 | GFLOP/s B=16 "
          "| % of conv ref B=1 / B=16 | plain eval ms/frame B=1 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['f']} | {r['params']:,} | {r['gmac']:.2f} | {r['ms1']:.1f} | {r['ms16']:.1f} "
              f"| {r['gflops1']:.1f} | {r['gflops16']:.1f} | {100 * r['gflops1'] / conv_ref:.0f} / "
              f"{100 * r['gflops16'] / conv_ref:.0f} | {r['ms_plain']:.1f} |")
    below = [f"{r['model']} (f={r['f']}, B={b})" for r in rows for b in (1, 16) if r[f"gflops{b}"] < 0.5 * conv_ref]
    print(f"\nBelow 50 % of the convolution reference: {', '.join(below) or 'none'}")


if __name__ == "__main__":
    main()
