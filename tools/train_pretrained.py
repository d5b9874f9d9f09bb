"""Train, calibrate and bundle the pretrained models of `dl4smlm.pretrained.PRETRAINED` into dl4smlm/weights/.

    python tools/train_pretrained.py [NAME ...] [--force]

Each model trains on fresh simulated patches whose density, photons, background and PSF width are drawn from wide ranges
(its recipe says which), then is calibrated on simulated stacks from 0.1 to 6 emitters/µm² (uniform and filaments) and
written without its training state (a few MB). Work in progress is kept in tools/_work/NAME.pt: a run that was stopped
resumes where it was. Models already bundled with the same recipe are skipped unless --force is given.
"""
import argparse, sys, time, warnings
from pathlib import Path

import torch

from dl4smlm.calibrate import calibrate_checkpoint
from dl4smlm.checkpoint import weights_dir
from dl4smlm.pretrained import PRETRAINED, describe
from dl4smlm.simulate import SimulationConfig
from dl4smlm.checkpoint import bundled_digests, load_checkpoint, save_checkpoint
from dl4smlm.workflow import train_from_folder

WORK = Path(__file__).resolve().parent / "_work"


def matches(ck, recipe):
    "Whether a bundled checkpoint was made by `recipe` (what tests/test_pretrained.py checks too)."
    sim = ck.get("simulation") or {}
    t = ck.get("training") or {}
    return (ck["model"]["name"] == recipe["model"] and ck["upsampling"] == recipe["upsampling"] and ck["loss"]["name"] == recipe["loss"]
            and all(sim.get(k) == v for k, v in recipe["simulation"].items())
            and (ck.get("data") or {}).get("ranges") == {k: list(v) for k, v in recipe["ranges"].items()}
            and t.get("epochs") == recipe["epochs"] and t.get("batch_size") == recipe["batch_size"] and t.get("lr") == recipe["lr"]
            and t.get("seed") == recipe["seed"] and ck.get("calibration") is not None)


def make(name, force=False):
    recipe, final = PRETRAINED[name], weights_dir() / f"{name}.pt"
    if final.is_file() and not force and matches(torch.load(final, map_location="cpu", weights_only=True), recipe):   # read as it is: a new file is not in BUNDLED_DIGESTS yet
        print(f"{name}: bundled already, same recipe (--force to retrain)"); return
    WORK.mkdir(exist_ok=True)
    work = WORK / f"{name}.pt"
    resume = work if work.is_file() and (load_checkpoint(work).get("resume") is not None) else None
    r = recipe
    start = time.perf_counter()
    train_from_folder(simulate_config=SimulationConfig(**r["simulation"], seed=r["seed"]), out=work, model=r["model"], upsampling=r["upsampling"],
                      loss=r["loss"], epochs=r["epochs"], batch_size=r["batch_size"], lr=r["lr"], samples_per_epoch=r["samples_per_epoch"],
                      patch_size=r["patch_size"], ranges=r["ranges"], seed=r["seed"], early_stopping=None, overwrite=resume is None,
                      resume=resume, device="cpu", calibrate=False, valid=0.1, test=0.0, progress=False)
    trained = time.perf_counter() - start
    cal = calibrate_checkpoint(work, device="cpu", seed=1)
    ck = load_checkpoint(work)
    ck["resume"] = None
    ck["pretrained"] = {"name": name, "train_seconds": round(trained), "threads": torch.get_num_threads()}
    final.parent.mkdir(exist_ok=True)
    save_checkpoint(final, ck)
    print(f"{name}: trained in {trained / 60:.1f} min, calibrated (mean Jaccard {cal['jaccard_pct']:.1f} %), "
          f"{final.stat().st_size / 1e6:.1f} MB\n  {describe(ck)}", flush=True)
    file_sha, tensors, settings, core = bundled_digests(final)
    print(f"  record it in BUNDLED_DIGESTS (nbs/04a_checkpoint.ipynb), or dl4smlm refuses the new file:\n"
          f'    "{name}": ("{file_sha}",\n        "{tensors}",\n        "{settings}",\n        "{core}"),', flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help=f"models to make (default: all of {list(PRETRAINED)})")
    p.add_argument("--force", action="store_true", help="retrain models that are bundled already")
    a = p.parse_args(argv)
    for n in a.names:
        if n not in PRETRAINED: p.error(f"unknown model {n!r}; expected some of {list(PRETRAINED)}")
    warnings.simplefilter("default")
    for n in a.names or PRETRAINED: make(n, a.force)


if __name__ == "__main__":
    sys.exit(main())
