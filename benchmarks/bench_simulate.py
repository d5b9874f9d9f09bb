"""Speed of dl4smlm.simulate: frames per second for 1,000 frames of 64×64 px at 2 emitters/µm².

Run: .venv/bin/python benchmarks/bench_simulate.py [--frames 1000] [--repeats 3]
Prints the best of `repeats` runs for each camera, with all CPU cores and with one thread, the speed
on a 256×256 px field, and the time of each stage (emitters, PSF rendering, camera noise) in one thread.
"""
import argparse
import os
import time

import numpy as np

from dl4smlm.simulate import (GaussianPSF, SimulationConfig, _cpu_count, _emitter_arrays, _expected_chunk, sample_emitters,
                              simulate)
from dl4smlm.structures import background_map


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cores = _cpu_count()
    base = SimulationConfig(frames=args.frames, height=64, width=64, density=2.0)
    print(f"dl4smlm.simulate: {args.frames} frames of 64×64 px, 2 emitters/µm² (~{2 * base.area_um2:.0f} per frame), "
          f"best of {args.repeats}; {cores} CPU core(s) usable, load average {os.getloadavg()[0]:.2f}")
    for camera in ("emccd", "scmos", "ideal"):
        cfg = SimulationConfig(**{**base.to_dict(), "camera": camera, "camera_params": {}})
        simulate(cfg, frames=20)                                                # warm up
        for workers in sorted({cores, 1}, reverse=True):
            t = best_time(lambda: simulate(cfg, workers=workers), args.repeats)
            print(f"  {camera:6s} workers={workers}: {args.frames / t:8.0f} frames/s  ({t:.3f} s)")

    big = SimulationConfig(frames=max(1, args.frames // 10), height=256, width=256, density=1.0)
    t = best_time(lambda: simulate(big), args.repeats)
    print(f"  larger field: {big.frames} frames of 256×256 px, 1 emitter/µm², EMCCD: {big.frames / t:.0f} frames/s")

    # where the time goes (one thread, EMCCD)
    cfg = base
    rng = np.random.default_rng(0)
    t_emit = best_time(lambda: sample_emitters(cfg, np.random.default_rng(0)), args.repeats)
    table = sample_emitters(cfg, rng)[0]
    arrays = _emitter_arrays(table)
    bg = background_map(64, 64, cfg.background)
    t_psf = best_time(lambda: _expected_chunk(arrays, 0, cfg.frames, cfg, GaussianPSF(), bg), args.repeats)
    expected = _expected_chunk(arrays, 0, cfg.frames, cfg, GaussianPSF(), bg)
    cam = cfg.make_camera()
    t_cam = best_time(lambda: cam.apply(expected, np.random.default_rng(1)), args.repeats)
    print(f"  stages, one thread, EMCCD: emitters {t_emit:.3f} s, PSF + background {t_psf:.3f} s, camera {t_cam:.3f} s "
          f"({len(table)} emitters)")


if __name__ == "__main__":
    main()
