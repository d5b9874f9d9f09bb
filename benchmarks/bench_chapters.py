"""How long a student waits for each chapter: every notebook's ordinary cells (`#| slow` skipped), run alone with nbdev-test.

    python benchmarks/bench_chapters.py                 # every chapter, one after the other
    python benchmarks/bench_chapters.py 03_losses 09_distill

Run it on a quiet machine: the times include starting the kernel, and two jobs on a 2-core CPU slow each other down
many times over. Results: benchmarks/results/bench_chapters.json (seconds per notebook, the machine's CPU count and load).
"""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebooks", nargs="*", help="notebook names without .ipynb (default: all in nbs/)")
    args = p.parse_args()
    paths = [ROOT / "nbs" / f"{n}.ipynb" for n in args.notebooks] or sorted(
        q for q in (ROOT / "nbs").glob("*.ipynb") if not q.name.startswith(("_", ".")))
    rows = []
    for nb in paths:
        load = os.getloadavg()[0]
        t = time.perf_counter()
        r = subprocess.run([str(Path(sys.executable).parent / "nbdev-test"), str(nb)], cwd=ROOT, capture_output=True, text=True)
        s = time.perf_counter() - t
        rows.append({"notebook": nb.stem, "seconds": round(s, 1), "passed": r.returncode == 0, "load_before": round(load, 2)})
        print(f"{nb.stem:16s} {s:7.1f} s  {'ok' if r.returncode == 0 else 'FAILED'}  (load before {load:.1f})", flush=True)
    total = sum(r["seconds"] for r in rows)
    print(f"{'all':16s} {total:7.1f} s")
    out = ROOT / "benchmarks" / "results" / "bench_chapters.json"
    out.write_text(json.dumps({"cpus": os.cpu_count(), "machine": platform.machine(), "rows": rows, "total_s": round(total, 1)},
                              indent=1) + "\n")
    print(f"wrote {out}")

if __name__ == "__main__":
    main()
