"""The `dl4smlm` command line: help, simulate, demo, and clear errors for bad input."""
import json, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest
import tifffile

from dl4smlm.cli import main

EXE = str(Path(sys.executable).parent/"dl4smlm")

def run(*args):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=300)

def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0 and "simulate" in r.stdout and "demo" in r.stdout
    for cmd in ("simulate", "demo"):
        r = run(cmd, "--help")
        assert r.returncode == 0 and "--seed" in r.stdout

def test_simulate_writes_the_dataset(tmp_path):
    out = tmp_path/"sim"
    r = run("simulate", out, "--frames", 4, "--size", 24, "--density", 2, "--photons", 1500, "--photons-sd", 100,
            "--background", 15, "--camera", "emccd", "--sigma-nm", 120, "--pixel-nm", 110, "--structure", "clusters", "--seed", 3)
    assert r.returncode == 0, r.stderr
    frames = tifffile.imread(out/"frames.tif")
    assert frames.shape == (4, 24, 24) and frames.dtype == "uint16"
    gt = pd.read_csv(out/"ground_truth.csv")
    assert {"id", "frame", "x [nm]", "y [nm]", "intensity [photon]"} <= set(gt.columns)
    assert gt["frame"].between(1, 4).all()
    params = json.loads((out/"simulation.json").read_text())
    text = json.dumps(params)
    for value in ("emccd", "clusters", "120", "110", "1500"): assert value in text, value

def test_simulate_same_seed_same_frames(tmp_path):
    for name in "ab": assert main(["simulate", str(tmp_path/name), "--frames", "3", "--size", "16", "--seed", "7"]) == 0
    assert (tifffile.imread(tmp_path/"a"/"frames.tif") == tifffile.imread(tmp_path/"b"/"frames.tif")).all()

def test_simulate_refuses_to_overwrite(tmp_path):
    assert main(["simulate", str(tmp_path), "--frames", "2", "--size", "16"]) == 0
    before = (tmp_path/"frames.tif").read_bytes()
    r = run("simulate", tmp_path, "--frames", "3", "--size", "16", "--seed", "9")
    assert r.returncode == 2 and "--overwrite" in r.stderr and "frames.tif" in r.stderr
    assert (tmp_path/"frames.tif").read_bytes() == before
    assert run("simulate", tmp_path, "--frames", "3", "--size", "16", "--overwrite").returncode == 0

@pytest.mark.parametrize("args, message", [
    (["--frames", "0"], "--frames"), (["--density", "-1"], "--density"), (["--camera", "ccd"], "--camera"),
    (["--photons", "many"], "--photons"), (["--structure", "grid"], "--structure")])
def test_simulate_bad_options(tmp_path, args, message):
    r = run("simulate", tmp_path/"x", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path/"x").exists()

def test_demo_writes_report(tmp_path):
    r = run("demo", "--out", tmp_path/"report", "--frames", 3)
    assert r.returncode == 0, r.stderr
    assert (tmp_path/"report"/"demo.png").stat().st_size > 10_000
    assert (tmp_path/"report"/"data"/"frames.tif").exists()
    assert str((tmp_path/"report").resolve()) in r.stdout
