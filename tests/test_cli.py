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

def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e: main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for cmd in ("demo", "simulate", "train", "predict", "evaluate", "models", "calibrate", "fit", "estimate", "convert", "export"):
        assert cmd in out
    for cmd in ("demo", "simulate", "train", "predict", "evaluate", "fit", "estimate", "convert", "export"):
        with pytest.raises(SystemExit) as e: main([cmd, "--help"])
        assert e.value.code == 0 and "--" in capsys.readouterr().out
    assert run("--help").returncode == 0                      # the installed console script

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

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A tiny dataset and a checkpoint trained on it for one short epoch through the command line."
    d = tmp_path_factory.mktemp("cli")
    assert main(["simulate", str(d/"data"), "--frames", "6", "--size", "32", "--density", "3", "--seed", "2"]) == 0
    r = run("train", d/"data", "--model", "fid-storm", "--upsampling", "4", "--epochs", "1", "--batch-size", "4",
            "--patch-size", "16", "--device", "cpu", "--out", d/"model.pt")
    assert r.returncode == 0, r.stderr
    return d

def test_train_writes_a_checkpoint_and_refuses_to_overwrite(trained):
    from dl4smlm.checkpoint import load_checkpoint
    ck = load_checkpoint(trained/"model.pt")
    assert ck["model"]["name"] == "fid-storm" and ck["upsampling"] == 4
    r = run("train", trained/"data", "--epochs", "1", "--out", trained/"model.pt")
    assert r.returncode == 2 and "--overwrite" in r.stderr

def test_train_resume_refuses_conflicting_options(trained):
    before = (trained/"model.pt").read_bytes()
    r = run("train", "--resume", trained/"model.pt", "--epochs", "50", "--model", "srcnn")
    assert r.returncode == 2 and "--model srcnn, --epochs 50 conflict with the run being resumed" in r.stderr, r.stderr
    assert "(model fid-storm, epochs 1)" in r.stderr and (trained/"model.pt").read_bytes() == before

def test_train_on_the_fly_from_simulation(tmp_path):
    r = run("train", "--simulate", "--size", "32", "--density", "3", "--model", "srcnn", "--upsampling", "4", "--epochs", "1",
            "--samples-per-epoch", "16", "--batch-size", "8", "--patch-size", "16", "--device", "cpu", "--out", tmp_path/"m.pt")
    assert r.returncode == 0, r.stderr
    assert (tmp_path/"m.pt").exists()
    assert "best epoch 1" in r.stdout and "test nmse" in r.stdout   # the summary names the kept epoch and the test metrics

@pytest.mark.parametrize("args, message", [([], "--simulate"), (["somewhere", "--simulate"], "--simulate"),
                                           (["--simulate", "--model", "resnet"], "--model"), (["--simulate", "--loss", "l2"], "--loss")])
def test_train_bad_options(tmp_path, args, message):
    r = run("train", *args, "--out", tmp_path/"m.pt")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path/"m.pt").exists()

def test_predict_then_evaluate(trained):
    out = trained/"pred"
    r = run("predict", trained/"model.pt", trained/"data"/"frames.tif", "--out", out, "--device", "cpu", "--threshold", "0.5")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["localizations.csv", "super_resolution.png", "super_resolution.tif"]
    assert tifffile.imread(out/"super_resolution.tif").shape[-2:] == (128, 128)
    r = run("predict", trained/"model.pt", trained/"data"/"frames.tif", "--out", out)
    assert r.returncode == 2 and "--overwrite" in r.stderr
    # evaluate: the field and the CRLB come from simulation.json beside the ground truth
    r = run("evaluate", trained/"data"/"ground_truth.csv", out/"localizations.csv")
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    for key in ("tp", "fp", "fn", "jaccard_pct", "rmse_nm", "efficiency_pct", "mean_dx_nm", "crlb_nm"): assert key in metrics
    assert metrics["n_ground_truth"] > 0
    # the ground truth scored against itself is perfect
    r = run("evaluate", trained/"data"/"ground_truth.csv", trained/"data"/"ground_truth.csv", "--table")
    assert r.returncode == 0, r.stderr
    assert "jaccard_pct" in r.stdout and "100.00" in r.stdout

def test_evaluate_needs_a_field(tmp_path, trained):
    gt = tmp_path/"gt.csv"
    gt.write_bytes((trained/"data"/"ground_truth.csv").read_bytes())
    r = run("evaluate", gt, gt)
    assert r.returncode == 2 and "--field-nm" in r.stderr
    r = run("evaluate", gt, gt, "--field-nm", "3200,3200")
    assert r.returncode == 0 and json.loads(r.stdout)["jaccard_pct"] == 100.0
    r = run("evaluate", gt, gt, "--field-nm", "3200")
    assert r.returncode == 2 and "WIDTH,HEIGHT" in r.stderr
    r = run("evaluate", gt, tmp_path/"missing.csv", "--field-nm", "3200,3200")
    assert r.returncode == 2 and "missing.csv" in r.stderr

def test_demo_writes_report(tmp_path):
    r = run("demo", "--out", tmp_path/"report", "--epochs", 1, "--samples-per-epoch", 16, "--test-frames", 3, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    report = tmp_path/"report"
    assert sorted(p.name for p in report.iterdir()) == ["errors.png", "metrics.json", "model.pt", "prediction", "resolution.png", "test_data", "training.png"]
    assert (report/"resolution.png").stat().st_size > 10_000
    metrics = json.loads((report/"metrics.json").read_text())
    assert all("jaccard_pct" in m for k, m in metrics.items() if k != "line_profile") and "trained fid-storm ×4" in metrics
    assert metrics["line_profile"]["true_separation_nm"] == 150
    assert str(report.resolve()) in r.stdout
    r = run("demo", "--out", report, "--epochs", 1)
    assert r.returncode == 2 and "--overwrite" in r.stderr

def test_predict_with_flip_average(trained):
    out = trained/"pred_flips"
    r = run("predict", trained/"model.pt", trained/"data"/"frames.tif", "--out", out, "--device", "cpu", "--threshold", "0.5", "--flip-average")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["localizations.csv", "super_resolution.png", "super_resolution.tif"]

def test_train_with_ranges_and_calibration(tmp_path):
    r = run("train", "--simulate", "--size", "32", "--density", "0.5:4", "--photons", "1000:3000", "--model", "srcnn", "--upsampling", "2",
            "--epochs", "1", "--samples-per-epoch", "16", "--batch-size", "8", "--patch-size", "16", "--device", "cpu", "--out", tmp_path/"m.pt")
    assert r.returncode == 0, r.stderr
    from dl4smlm.checkpoint import load_checkpoint
    ck = load_checkpoint(tmp_path/"m.pt")
    assert ck["data"]["ranges"] == {"density": [0.5, 4.0], "photons": [1000.0, 3000.0]}
    assert ck["simulation"]["density"] == pytest.approx((0.5 * 4) ** 0.5) and ck["normalizer"]["frame_scaling"] == "photons"
    assert "calibrated detection: threshold" in r.stdout and ck["calibration"] is not None

@pytest.mark.parametrize("args, message", [(["--simulate", "--density", "4:1"], "LOW <= HIGH"), (["--simulate", "--photons", "a:b"], "LOW:HIGH"),
                                           (["DATA", "--density", "0.1:6"], "--simulate")])
def test_train_bad_ranges(tmp_path, args, message):
    r = run("train", *[tmp_path if a == "DATA" else a for a in args], "--out", tmp_path/"m.pt")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path/"m.pt").exists()

def test_calibrate_command(trained, tmp_path):
    r = run("calibrate", trained/"model.pt", trained/"data", "--device", "cpu")
    assert r.returncode == 2 and "--out" in r.stderr
    before = (trained/"model.pt").read_bytes()
    r = run("calibrate", trained/"model.pt", trained/"data", "--out", tmp_path/"cal.pt", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    from dl4smlm.checkpoint import load_checkpoint
    assert load_checkpoint(tmp_path/"cal.pt")["calibration"]["stacks"] == [f"{trained/'data'} (6 frames)"]
    assert (trained/"model.pt").read_bytes() == before                       # the input is not touched
    r = run("calibrate", trained/"model.pt", trained/"data", "--out", tmp_path/"cal.pt", "--device", "cpu")
    assert r.returncode == 2 and "--overwrite" in r.stderr
    r = run("calibrate", "fid-storm-x4-emccd", trained/"data", "--in-place")
    assert r.returncode == 2 and "--out" in r.stderr

def test_predict_with_a_bundled_model_and_camera_options(trained, tmp_path):
    out = tmp_path/"pred"
    r = run("predict", "fid-storm-x4-emccd", trained/"data"/"frames.tif", "--out", out, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    n = len(pd.read_csv(out/"localizations.csv"))
    truth = len(pd.read_csv(trained/"data"/"ground_truth.csv"))
    assert 0.5 * truth < n < 1.5 * truth
    r = run("predict", "fid-storm-x4-emccd", trained/"data"/"frames.tif", "--out", tmp_path/"p2", "--device", "cpu", "--camera", "scmos",
            "--em-gain", "100")
    assert r.returncode == 2 and "em_gain" in r.stderr                      # an sCMOS has no EM gain: said, not ignored
    located = lambda d: pd.read_csv(d/"localizations.csv")[["frame", "x [nm]", "y [nm]"]]
    for baseline, same in (("100", True), ("400", False)):                  # 100: the stack's own (simulation.json); 400: wrong
        r = run("predict", "fid-storm-x4-emccd", trained/"data"/"frames.tif", "--out", tmp_path/baseline, "--device", "cpu", "--baseline", baseline)
        assert r.returncode == 0, r.stderr
        assert located(tmp_path/baseline).equals(located(out)) == same     # the option is applied, over simulation.json's camera

def test_demo_report_is_complete_or_absent(tmp_path, monkeypatch):
    "A demo that fails half-way leaves no report folder, and no work folder either."
    import dl4smlm.demo as demo
    def fail(*a, **kw): raise RuntimeError("simulated failure after training")
    monkeypatch.setattr(demo, "simulate", fail)
    with pytest.raises(RuntimeError, match="simulated failure"):
        demo.run_demo(tmp_path/"report", epochs=1, samples_per_epoch=8, test_frames=2, device="cpu", progress=False, log=lambda *a: None)
    assert not (tmp_path/"report").exists()
    assert list(tmp_path.iterdir()) == []                                # nor its hidden work folder, nor a lock
    monkeypatch.undo()
