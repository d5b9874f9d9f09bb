"""Agreement with established tools on real acquisitions (issue 21, item 6).

For every stack in data/real/ (made by tools/fetch_real_data.py, described in data/real/README.md and each
stack's meta.json) this runs

- `dl4smlm fit` and `dl4smlm estimate` (command line, camera and pixel size from meta.json),
- the bundled models for the stack's camera type (`dl4smlm predict NAME`, with `--force-pixel-size` where the
  stack's pixels differ from the model's 100 nm by more than 5 %),
- Picasso (`picassosr`: identify + `gaussmle`, box 7, minimum net gradient 5000: the defaults of its GUI) and
  SMAP's Python port (`smappy-smlm`: `smappy.api.fit` with its defaults: DoG filter, σ 1.2 px, dynamic cutoff 1.7,
  ROI 13 px, free-σ Gaussian MLE) where the side environment /work/side-env (or $DL4SMLM_SIDE_ENV) has them,
- the reference localizations that ship with the frames (rapidSTORM, Crocker–Grier, ...) as one more "tool",

and reports per stack: counts, the fraction of each tool's localizations matched by each other tool within one
camera pixel (per frame, Hungarian assignment), the Jaccard index of each pair, the median offset (dx, dy) of
matched pairs in nm, the share of localizations with no signal under them (local SNR < 3) and the time.

Every table is brought to one convention before matching: frame from 0, x the image column and y the row, in
camera pixels, with pixel centres at integers. Each tool's own convention, read from its source:
- dl4smlm (fit, predict): ThunderSTORM CSV, frame from 1, x [nm] from the outer corner of pixel (0, 0), so a
  pixel centre is at (i + ½)·pixel (REFERENCE.md §1, §11): x_px = x_nm / pixel − ½, frame − 1.
- Picasso: `locs.x`, `locs.y` in pixels, frame from 0; `gausslq`/`gaussmle` add the fitted offset to the integer
  pixel of the identified maximum (`picasso/gausslq.py: x = theta[:, 0] + identifications["x"]`): centres at integers.
- smappy: `x_pix = x_roi − half + candidate.x` (`smappy/fit_rois.py`), "pixel k is centred on k, the fitter's
  convention" (`smappy/simulate/camera.py`), frame from 0; x_nm = x_pix · pixel.
- references: as converted by tools/fetch_real_data.py (its docstrings give each tool's convention).

Only localizations at least 6 px from every edge are matched (smappy's 13 px ROI cannot fit closer; Picasso's box
7 not closer than 3 px): the counts are given both in all and inside that window.

Usage: flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_real.py [--stacks NAME ...] [--no-models]
(another build of dl4smlm: DL4SMLM_CLI=path/to/its/dl4smlm DL4SMLM_CLI_COMMIT=abc1234)
Writes benchmarks/results/real_<stack>.json and prints a table per stack. Times are wall-clock seconds on
whatever else this machine runs, and not alike: for dl4smlm the whole command (Python and torch start included,
~5 s of it), for Picasso and smappy their localization call alone, after a first call that compiles their code.
They are not a speed benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy.ndimage import median_filter
from scipy.optimize import linear_sum_assignment

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT/"data"/"real"
RESULTS = Path(__file__).resolve().parent/"results"
CLI = Path(os.environ.get("DL4SMLM_CLI", ROOT/".venv"/"bin"/"dl4smlm"))  # another build: DL4SMLM_CLI=path
SIDE = Path(os.environ.get("DL4SMLM_SIDE_ENV", "/work/side-env"))
EDGE_PX = 6          # comparison window: localizations at least this far from every edge
MATCH_PX = 1.0       # a match: within one camera pixel, same frame
NO_SIGNAL_SNR = 3.0  # local SNR below which a localization has no signal under it

CONVENTIONS = {
    "dl4smlm": "ThunderSTORM CSV: frame from 1, x [nm] from the outer corner of pixel (0,0): x_px = x_nm/pixel - 0.5",
    "picasso": "locs.x/y in px, pixel centres at integers (identified integer pixel + fitted offset), frame from 0",
    "smappy": "x_pix = x_roi - half + candidate.x: pixel centres at integers, frame from 0; x_nm = x_pix*pixel",
    "reference": "tools/fetch_real_data.py: frame from 0, x_px/y_px with pixel centres at integers",
}

# Run inside the side environment: localizes one TIFF with Picasso or smappy, prints a JSON table.
SIDE_RUNNER = r'''
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import numpy as np
tool, path, cam = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if tool == "picasso":
    from picasso import io, localize
    movie, _ = io.load_movie(path)
    info = {"Baseline": cam["baseline"], "Sensitivity": cam["e_per_adu"], "Gain": cam["em_gain"],
            "Qe": cam["qe"], "Pixelsize": cam["pixel_nm"]}
    ident = {"Min. Net Gradient": 5000, "Box Size": 7}
    run = lambda: localize.localize(movie, camera_info=info, identification_parameters=ident,
                                    fitting_method="gaussmle", threaded=False)
    run()                       # numba compiles on the first call: time the second
    t = time.perf_counter(); locs, _ = run(); seconds = time.perf_counter() - t
    out = {"frame": locs["frame"], "x_px": locs["x"], "y_px": locs["y"], "photons": locs["photons"],
           "sigma_px": (locs["sx"] + locs["sy"]) / 2, "bg": locs["bg"]}
    out = {k: np.asarray(v, dtype=float).tolist() for k, v in out.items()}
else:
    import tifffile
    import smappy.api as api
    frames = tifffile.imread(path)
    frames = frames[None] if frames.ndim == 2 else frames
    camera = dict(conversion=cam["e_per_adu"], offset=cam["baseline"], em_on=cam["type"] == "emccd",
                  emgain=cam["em_gain"] if cam["type"] == "emccd" else None, pixelsize_um=cam["pixel_nm"] / 1000)
    api.fit(frames[:1], camera=camera)
    t = time.perf_counter(); locs = api.fit(frames, camera=camera); seconds = time.perf_counter() - t
    c = locs.columns
    px = cam["pixel_nm"]
    n = len(locs)
    out = {"frame": np.asarray(c["frame"], float).tolist() if n else [],
           "x_px": (np.asarray(c["x_nm"], float) / px).tolist() if n else [],
           "y_px": (np.asarray(c["y_nm"], float) / px).tolist() if n else [],
           "photons": np.asarray(c["photons"], float).tolist() if n else [],
           "sigma_px": (np.asarray(c["sigma_nm"], float) / px).tolist() if n else [],
           "bg": np.asarray(c["background"], float).tolist() if n else []}
print("@@JSON@@" + json.dumps({"seconds": seconds, "table": out}))
'''


# ---------------------------------------------------------------- running the tools
def _camera_args(cam: dict) -> list[str]:
    args = ["--camera", cam["type"], "--baseline", str(cam["baseline"]), "--e-per-adu", str(cam["e_per_adu"]),
            "--qe", str(cam["qe"])]
    if cam["type"] == "emccd":
        args += ["--em-gain", str(cam["em_gain"])]
    return args


def _run(cmd: list[str], timeout: int = 1800) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    t = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)
    return r, time.perf_counter() - t


def _last_line(r: subprocess.CompletedProcess) -> str:
    lines = (r.stderr.strip() or r.stdout.strip()).splitlines()
    return lines[-1] if lines else f"exit {r.returncode}"


def _read_dl4smlm(csv: Path, pixel_nm: float) -> pd.DataFrame:
    d = pd.read_csv(csv)
    out = pd.DataFrame({"frame": d["frame"].to_numpy() - 1, "x_px": d["x [nm]"].to_numpy()/pixel_nm - 0.5,
                        "y_px": d["y [nm]"].to_numpy()/pixel_nm - 0.5})
    if "sigma [nm]" in d:
        out["sigma_px"] = d["sigma [nm]"].to_numpy()/pixel_nm
    if "intensity [photon]" in d:
        out["photons"] = d["intensity [photon]"].to_numpy()
    return out


def _run_localizer(cmd: list, out: Path, meta: dict) -> dict:
    "Run a dl4smlm command that writes OUT/localizations.csv; its command line, time and table (or its error)."
    r, seconds = _run(cmd)
    res = {"command": " ".join(map(str, cmd[1:])).replace(str(ROOT) + "/", ""), "seconds": seconds,
           "seconds_include_startup": True, "convention": CONVENTIONS["dl4smlm"]}
    if r.returncode != 0:
        return {**res, "error": _last_line(r)}
    return {**res, "table": _read_dl4smlm(out/"localizations.csv", meta["pixel_nm"])}


def run_fit(stack: Path, meta: dict, tmp: Path) -> dict:
    out = tmp/"fit"
    cmd = [CLI, "fit", stack/meta["frames"], "--out", out, "--pixel-nm", meta["pixel_nm"], "--overwrite",
           *_camera_args(meta["camera"])]
    return _run_localizer(cmd, out, meta)


def run_estimate(stack: Path, meta: dict, tmp: Path) -> dict:
    out = tmp/"estimate.json"
    cmd = [CLI, "estimate", stack/meta["frames"], "--out", out, "--pixel-nm", meta["pixel_nm"], "--overwrite",
           *_camera_args(meta["camera"])]
    r, seconds = _run(cmd)
    res = {"command": " ".join(map(str, cmd[1:])).replace(str(ROOT) + "/", ""), "seconds": seconds}
    if r.returncode != 0:
        return {**res, "error": _last_line(r)}
    sim = json.loads(out.read_text())
    found = {k: v for k, v in _flatten(sim).items() if re.search(r"sigma|psf", k, re.I)}
    m = re.search(r"σ ([\d.]+) nm", _last_line(r))
    return {**res, "message": _last_line(r), "sigma_nm": float(m.group(1)) if m else None, "sigma_fields": found}


def _flatten(d, prefix=""):
    out = {}
    for k, v in (d.items() if isinstance(d, dict) else []):
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def bundled_models(camera_type: str) -> list[tuple[str, float]]:
    r, _ = _run([CLI, "models"])
    models = []
    for line in r.stdout.splitlines():
        m = re.match(r"(\S+)\s.*?(\w+) camera, ([\d.]+) nm pixels", line)
        if m and m.group(2) == camera_type:
            models.append((m.group(1), float(m.group(3))))
    return models


def run_predict(stack: Path, meta: dict, tmp: Path, model: str, model_pixel_nm: float) -> dict:
    out = tmp/f"predict_{model}"
    cmd = [CLI, "predict", model, stack/meta["frames"], "--out", out, "--pixel-nm", meta["pixel_nm"],
           "--overwrite", "--device", "cpu", *_camera_args(meta["camera"])]
    if abs(meta["pixel_nm"]/model_pixel_nm - 1) > 0.05:
        cmd.append("--force-pixel-size")
    return _run_localizer(cmd, out, meta)


def run_side(tool: str, stack: Path, meta: dict) -> dict | None:
    py = SIDE/"bin"/"python"
    if not (SIDE/"READY").exists() or not py.exists():
        return None
    cam = {**meta["camera"], "pixel_nm": meta["pixel_nm"]}
    r, wall = _run([py, "-c", SIDE_RUNNER, tool, stack/meta["frames"], json.dumps(cam)])
    res = {"command": f"{tool} in {SIDE} (see SIDE_RUNNER in benchmarks/bench_real.py)", "convention": CONVENTIONS[tool]}
    payload = [ln for ln in r.stdout.splitlines() if ln.startswith("@@JSON@@")]
    if r.returncode != 0 or not payload:
        return {**res, "seconds": wall, "error": _last_line(r)}
    got = json.loads(payload[-1][len("@@JSON@@"):])
    table = pd.DataFrame(got["table"])
    table["frame"] = table["frame"].astype(int) if len(table) else table.get("frame")
    return {**res, "seconds": got["seconds"], "seconds_include_startup": False, "table": table}


def read_reference(stack: Path, name: str, rel: str, frames: list | None) -> dict:
    t = pd.read_csv(stack/rel)
    pixel_nm = json.loads((stack/"meta.json").read_text())["pixel_nm"]
    if "sigma_px" not in t and {"sigma_x_px", "sigma_y_px"} <= set(t):
        t["sigma_px"] = (t["sigma_x_px"] + t["sigma_y_px"])/2
    if "sigma_px" not in t and {"fwhm_x_nm", "fwhm_y_nm"} <= set(t):
        t["sigma_px"] = (t["fwhm_x_nm"] + t["fwhm_y_nm"])/2/2.3548200450309493/pixel_nm
    return {"command": f"data/real/{stack.name}/{rel}", "seconds": None, "convention": CONVENTIONS["reference"],
            "table": t, "frames": frames}


# ---------------------------------------------------------------- comparing
def local_snr(frames: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """Signal under each localization over the noise of its frame: the sum of the 3×3 pixels around it less
    their local background (a 9×9 median filter of the frame), over 3 × the frame's robust noise (1.4826 ×
    MAD of the frame less its background). A spot of a few hundred photons scores ~10; noise scores ~N(0, 1)."""
    if len(table) == 0:
        return np.zeros(0)
    snr = np.full(len(table), np.nan)
    f = table["frame"].to_numpy().astype(int)
    r = np.clip(np.rint(table["y_px"].to_numpy()).astype(int), 1, frames.shape[1] - 2)
    c = np.clip(np.rint(table["x_px"].to_numpy()).astype(int), 1, frames.shape[2] - 2)
    for k in np.unique(f):
        if not 0 <= k < len(frames):
            continue
        img = frames[k].astype(float)
        resid = img - median_filter(img, size=9, mode="reflect")
        noise = 1.4826*np.median(np.abs(resid - np.median(resid)))
        s = f == k
        win = sum(resid[r[s] + dr, c[s] + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1))
        snr[s] = win/(3*noise)
    return snr


def match(a: pd.DataFrame, b: pd.DataFrame, radius: float = MATCH_PX) -> tuple[np.ndarray, np.ndarray]:
    "Indices of matched pairs (rows of a, rows of b): per frame, Hungarian assignment, distance ≤ radius px."
    ia, ib = [], []
    for k in np.intersect1d(a["frame"].unique(), b["frame"].unique()):
        sa = np.flatnonzero(a["frame"].to_numpy() == k)
        sb = np.flatnonzero(b["frame"].to_numpy() == k)
        d = np.hypot(a["x_px"].to_numpy()[sa, None] - b["x_px"].to_numpy()[None, sb],
                     a["y_px"].to_numpy()[sa, None] - b["y_px"].to_numpy()[None, sb])
        cost = np.where(d <= radius, d, 1e6)
        r, c = linear_sum_assignment(cost)
        keep = d[r, c] <= radius
        ia.append(sa[r[keep]])
        ib.append(sb[c[keep]])
    if not ia:
        return np.zeros(0, int), np.zeros(0, int)
    return np.concatenate(ia), np.concatenate(ib)


def in_window(t: pd.DataFrame, shape: tuple, frames: list | None = None) -> pd.DataFrame:
    h, w = shape
    keep = ((t["x_px"] >= EDGE_PX - 0.5) & (t["x_px"] <= w - EDGE_PX - 0.5)
            & (t["y_px"] >= EDGE_PX - 0.5) & (t["y_px"] <= h - EDGE_PX - 0.5))
    if frames is not None:
        keep &= t["frame"].isin(frames)
    return t[keep].reset_index(drop=True)


def compare(tools: dict, shape: tuple, pixel_nm: float) -> list[dict]:
    pairs = []
    names = [n for n, r in tools.items() if "table" in r]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            # a reference that covers only some frames is compared on those frames alone
            frames = tools[a].get("frames") or tools[b].get("frames")
            ta, tb = in_window(tools[a]["table"], shape, frames), in_window(tools[b]["table"], shape, frames)
            ia, ib = match(ta, tb)
            m = len(ia)
            dx = (tb["x_px"].to_numpy()[ib] - ta["x_px"].to_numpy()[ia])*pixel_nm
            dy = (tb["y_px"].to_numpy()[ib] - ta["y_px"].to_numpy()[ia])*pixel_nm
            pairs.append({"a": a, "b": b, "frames": frames, "n_a": len(ta), "n_b": len(tb), "matched": m,
                          "frac_a_matched": m/len(ta) if len(ta) else None,
                          "frac_b_matched": m/len(tb) if len(tb) else None,
                          "jaccard": m/(len(ta) + len(tb) - m) if len(ta) + len(tb) - m else None,
                          "median_dx_nm": float(np.median(dx)) if m else None,
                          "median_dy_nm": float(np.median(dy)) if m else None})
    return pairs


# ---------------------------------------------------------------- one stack
def bench_stack(stack: Path, models: bool = True) -> dict:
    meta = json.loads((stack/"meta.json").read_text())
    frames = tifffile.imread(stack/meta["frames"])
    frames = frames[None] if frames.ndim == 2 else frames
    shape = frames.shape[1:]
    tools: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        note = None
        if len(frames) == 1:
            # The command line refuses a one-frame TIFF (it reads a 2-D image as "not a stack"): the frame is
            # given twice and only frame 0 is kept, which changes nothing for a detector that works frame by frame.
            tifffile.imwrite(tmp/"twice.tif", np.concatenate([frames, frames]))
            meta = {**meta, "frames": str(tmp/"twice.tif")}
            note = "one frame: the command line got it twice (it refuses a one-frame TIFF); frame 0 kept"
        tools["fit"] = run_fit(stack, meta, tmp)
        estimate = run_estimate(stack, meta, tmp)
        if models:
            for name, px in bundled_models(meta["camera"]["type"]):
                tools[name] = run_predict(stack, meta, tmp, name, px)
        if note:
            for r in [estimate, *tools.values()]:
                r["note"] = note
                if "table" in r:
                    r["table"] = r["table"][r["table"]["frame"] == 0].reset_index(drop=True)
        meta = json.loads((stack/"meta.json").read_text())
    for tool in ("picasso", "smappy"):
        got = run_side(tool, stack, meta)
        if got is not None:
            tools[tool] = got
    for name, rel in meta["references"].items():
        tools[name] = read_reference(stack, name, rel, meta["reference_frames"].get(name))

    summary = {}
    for name, r in tools.items():
        s = {k: v for k, v in r.items() if k != "table"}
        if "table" in r:
            t = r["table"]
            snr = local_snr(frames, t)
            s["count"] = int(len(t))
            s["count_in_window"] = int(len(in_window(t, shape, r.get("frames"))))
            s["per_frame"] = float(len(t)/(len(r["frames"]) if r.get("frames") else len(frames)))
            s["no_signal_frac"] = float(np.mean(snr < NO_SIGNAL_SNR)) if len(t) else None
            s["median_local_snr"] = float(np.nanmedian(snr)) if len(t) else None
            if "sigma_px" in t and len(t):
                s["median_sigma_nm"] = float(np.median(t["sigma_px"]))*meta["pixel_nm"]
                s["sigma_iqr_nm"] = [float(q)*meta["pixel_nm"] for q in np.percentile(t["sigma_px"], [25, 75])]
        summary[name] = s
    return {"stack": stack.name, "title": meta["title"], "shape": list(frames.shape), "pixel_nm": meta["pixel_nm"],
            "camera": meta["camera"], "match_radius_px": MATCH_PX, "edge_px": EDGE_PX,
            "no_signal_snr": NO_SIGNAL_SNR, "estimate": estimate, "tools": summary,
            "pairs": compare(tools, shape, meta["pixel_nm"]),
            "dl4smlm": _version(), "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}}


def _version() -> dict:
    "Which dl4smlm ran: this tree's (its commit, and whether the package had uncommitted changes) or DL4SMLM_CLI's."
    r, _ = _run([CLI, "--version"])
    if "DL4SMLM_CLI" in os.environ:       # another build: say which with DL4SMLM_CLI_COMMIT
        return {"cli": str(CLI), "version": r.stdout.strip(), "commit": os.environ.get("DL4SMLM_CLI_COMMIT", "unknown")}
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "nbs", "dl4smlm"],
                           capture_output=True, text=True)
    return {"cli": str(CLI), "version": r.stdout.strip(), "commit": git.stdout.strip(),
            "uncommitted_changes_in_package": bool(dirty.stdout.strip())}


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def print_report(res: dict) -> None:
    print(f"\n== {res['stack']}: {res['title']}  ({res['shape'][0]} frames, {res['pixel_nm']:g} nm pixels)")
    est = res["estimate"]
    print(f"   estimate: {est.get('error') or est.get('message')}")
    print(f"   {'tool':22s} {'count':>6s} {'in win':>6s} {'/frame':>7s} {'no-sig':>7s} {'SNR':>6s} {'σ nm':>6s} {'s':>7s}")
    for name, s in res["tools"].items():
        if "error" in s:
            print(f"   {name:22s} error: {s['error']}")
            continue
        print(f"   {name:22s} {s['count']:6d} {s['count_in_window']:6d} {s['per_frame']:7.1f} "
              f"{_fmt(s['no_signal_frac'] and 100*s['no_signal_frac'], '6.0f')}% {_fmt(s['median_local_snr'], '6.1f')} "
              f"{_fmt(s.get('median_sigma_nm'), '6.0f')} {_fmt(s['seconds'], '7.2f')}")
    print(f"   {'pair (a vs b)':40s} {'n_a':>5s} {'n_b':>5s} {'a in b':>7s} {'b in a':>7s} {'Jacc':>6s} {'dx nm':>7s} {'dy nm':>7s}")
    for p in res["pairs"]:
        print(f"   {p['a'] + ' vs ' + p['b']:40s} {p['n_a']:5d} {p['n_b']:5d} "
              f"{_fmt(p['frac_a_matched'] and 100*p['frac_a_matched'], '6.0f')}% "
              f"{_fmt(p['frac_b_matched'] and 100*p['frac_b_matched'], '6.0f')}% "
              f"{_fmt(p['jaccard'] and 100*p['jaccard'], '5.0f')}% {_fmt(p['median_dx_nm'], '7.1f')} "
              f"{_fmt(p['median_dy_nm'], '7.1f')}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stacks", nargs="*", help="names of folders in data/real (default: all)")
    ap.add_argument("--no-models", action="store_true", help="skip the bundled models")
    args = ap.parse_args(argv)
    stacks = sorted(p.parent for p in REAL.glob("*/meta.json"))
    if args.stacks:
        stacks = [s for s in stacks if s.name in args.stacks]
    if not stacks:
        print("no stack in data/real: run python tools/fetch_real_data.py", file=sys.stderr)
        return 1
    if not (SIDE/"READY").exists():
        print(f"note: no side environment at {SIDE} (READY missing): Picasso and smappy are skipped", file=sys.stderr)
    RESULTS.mkdir(exist_ok=True)
    for stack in stacks:
        res = bench_stack(stack, models=not args.no_models)
        out = RESULTS/f"real_{stack.name}.json"
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(res, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
        os.replace(tmp, out)
        print_report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
