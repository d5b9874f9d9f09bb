"""The command line on a microscope's own data: pixel size from the TIFF, `fit`, `estimate` → `train --config`,
`convert`, `export`, and the warning when a stack lies outside what a model was trained on."""
import json, shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dl4smlm.cli import main
from dl4smlm.evaluate import assess
from dl4smlm.formats import read_table
from dl4smlm.io import read_pixel_nm
from dl4smlm.tables import read_localizations
from dl4smlm.checkpoint import load_checkpoint

EMCCD = ["--camera", "emccd", "--baseline", "100", "--e-per-adu", "45", "--em-gain", "300"]   # the simulator's EMCCD, as a user types it

def exit_code(argv):
    "main's exit status, also when argparse or an error exits."
    try: return main([str(a) for a in argv])
    except SystemExit as e: return e.code

@pytest.fixture(scope="module")
def stack160(tmp_path_factory):
    "A 160 nm-pixel stack as a microscope writes it: a calibrated TIFF alone (no simulation.json), and its ground truth elsewhere."
    root = tmp_path_factory.mktemp("p160")
    assert main(["simulate", str(root/"sim"), "--frames", "20", "--pixel-nm", "160", "--sigma-nm", "176", "--density", "0.15", "--seed", "4"]) == 0
    (root/"scope").mkdir()
    shutil.copy(root/"sim"/"frames.tif", root/"scope"/"frames.tif")
    return root/"scope"/"frames.tif", read_localizations(root/"sim"/"ground_truth.csv")

def test_pixel_size_comes_from_the_tiff(stack160):
    frames, _ = stack160
    assert read_pixel_nm(frames) == pytest.approx(160.0)

def test_fit_a_160nm_stack_with_no_pixel_option(stack160, tmp_path, capsys):
    frames, truth = stack160
    assert exit_code(["fit", frames, "--out", tmp_path/"fit", *EMCCD]) == 0
    locs = read_localizations(tmp_path/"fit"/"localizations.csv")
    m = assess(truth, locs, (64 * 160.0, 64 * 160.0))
    assert m["jaccard_pct"] > 80 and abs(m["mean_dx_nm"]) < 5 and abs(m["mean_dy_nm"]) < 5, m
    assert (locs["uncertainty [nm]"] > 0).all() and (tmp_path/"fit"/"super_resolution.png").is_file()

def test_fit_needs_a_camera_and_refuses_to_overwrite(stack160, tmp_path, capsys):
    frames, _ = stack160
    assert exit_code(["fit", frames, "--out", tmp_path/"fit"]) == 2
    assert "camera unknown" in capsys.readouterr().err and not (tmp_path/"fit").exists()
    assert exit_code(["fit", frames, "--out", tmp_path/"fit", *EMCCD]) == 0
    before = (tmp_path/"fit"/"localizations.csv").read_bytes()
    assert exit_code(["fit", frames, "--out", tmp_path/"fit", *EMCCD, "--sigma-nm", "150"]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path/"fit"/"localizations.csv").read_bytes() == before

def test_predict_refuses_other_pixels_unless_forced(stack160, tmp_path, capsys):
    frames, truth = stack160
    assert exit_code(["predict", "fid-storm-x4-emccd", frames, "--out", tmp_path/"pred"]) == 2
    err = capsys.readouterr().err
    assert "160 nm" in err and "100 nm" in err and "--force-pixel-size" in err and not (tmp_path/"pred").exists()
    assert exit_code(["predict", "fid-storm-x4-emccd", frames, "--out", tmp_path/"pred", "--force-pixel-size", *EMCCD]) == 0
    assert "forced" in capsys.readouterr().err
    m = assess(truth, read_localizations(tmp_path/"pred"/"localizations.csv"), (64 * 160.0, 64 * 160.0))
    assert m["jaccard_pct"] > 80, m                                      # coordinates on the stack's 160 nm scale

def test_predict_warns_when_the_stack_is_outside_the_training_ranges(tmp_path, capsys):
    assert main(["simulate", str(tmp_path/"wide"), "--frames", "20", "--sigma-nm", "170", "--density", "0.3", "--seed", "5"]) == 0
    assert exit_code(["predict", "fid-storm-x4-emccd", tmp_path/"wide"/"frames.tif", "--out", tmp_path/"pred"]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "PSF σ" in err and "90–130 nm" in err, err
    assert main(["simulate", str(tmp_path/"ok"), "--frames", "20", "--sigma-nm", "110", "--density", "0.5", "--seed", "6"]) == 0
    assert exit_code(["predict", "fid-storm-x4-emccd", tmp_path/"ok"/"frames.tif", "--out", tmp_path/"pred2"]) == 0
    assert "outside" not in capsys.readouterr().err

def test_estimate_then_train_on_the_estimate(tmp_path, capsys):
    assert main(["simulate", str(tmp_path/"sim"), "--frames", "60", "--sigma-nm", "130", "--photons", "3000", "--background", "40",
                 "--density", "0.5", "--camera", "scmos", "--seed", "8"]) == 0
    (tmp_path/"scope").mkdir()
    shutil.copy(tmp_path/"sim"/"frames.tif", tmp_path/"scope"/"frames.tif")
    cam = json.loads((tmp_path/"sim"/"simulation.json").read_text())["config"]["camera_params"]
    scmos = ["--camera", "scmos", "--baseline", cam["baseline"], "--e-per-adu", cam["e_per_adu"], "--qe", cam["qe"]]   # as on its spec sheet
    assert exit_code(["estimate", tmp_path/"scope"/"frames.tif", "--out", tmp_path/"est.json", *scmos]) == 0
    est = json.loads((tmp_path/"est.json").read_text())
    c = est["config"]
    assert abs(c["sigma_nm"] / 130 - 1) < 0.1 and abs(c["photons"] / 3000 - 1) < 0.2 and abs(c["background"] / 40 - 1) < 0.2, c
    assert c["camera"] == "scmos" and c["pixel_nm"] == 100.0
    assert exit_code(["estimate", tmp_path/"scope"/"frames.tif", "--out", tmp_path/"est.json", *scmos]) == 2   # exists: refused
    assert exit_code(["train", "--config", tmp_path/"est.json", "--model", "fid-storm", "--upsampling", "4", "--epochs", "1",
                      "--samples-per-epoch", "8", "--batch-size", "8", "--patch-size", "16", "--out", tmp_path/"m.pt"]) == 0
    ck = load_checkpoint(tmp_path/"m.pt")
    assert ck["simulation"]["sigma_nm"] == pytest.approx(c["sigma_nm"]) and ck["simulation"]["camera"] == "scmos"
    assert sorted(ck["data"]["ranges"]) == sorted(est["ranges"])
    for k, v in est["ranges"].items(): assert list(ck["data"]["ranges"][k]) == pytest.approx(v), k

def test_convert_round_trip_and_pixel_size(tmp_path, capsys):
    src = Path(__file__).parent.parent/"data"/"ground_truth.csv"
    assert exit_code(["convert", src, tmp_path/"locs.hdf5"]) == 0            # pixel size from data/simulation.json
    assert (tmp_path/"locs.yaml").is_file()
    assert exit_code(["convert", tmp_path/"locs.hdf5", tmp_path/"locs.h5"]) == 0
    assert exit_code(["convert", tmp_path/"locs.h5", tmp_path/"smap.csv", "--to", "smap"]) == 0
    assert exit_code(["convert", tmp_path/"smap.csv", tmp_path/"back.csv"]) == 2            # SMAP's fitter origin needs the pixel size
    assert "--pixel-nm" in capsys.readouterr().err and not (tmp_path/"back.csv").exists()
    assert exit_code(["convert", tmp_path/"smap.csv", tmp_path/"back.csv", "--pixel-nm", "100"]) == 0
    a, b = read_localizations(src), read_table(tmp_path/"back.csv")
    np.testing.assert_allclose(b[["x [nm]", "y [nm]"]].to_numpy(), a[["x [nm]", "y [nm]"]].to_numpy(), atol=0.01)
    assert (b["frame"].to_numpy() == a["frame"].to_numpy()).all()
    shutil.copy(src, tmp_path/"alone.csv")                                   # no pixel size anywhere: a clear error
    assert exit_code(["convert", tmp_path/"alone.csv", tmp_path/"alone.hdf5"]) == 2
    assert "--pixel-nm" in capsys.readouterr().err and not (tmp_path/"alone.hdf5").exists()

def test_export_torchscript(tmp_path, capsys):
    assert exit_code(["export", "fid-storm-x4-emccd", "--out", tmp_path/"exp", "--format", "torchscript"]) == 0
    assert "max |exported − PyTorch|" in capsys.readouterr().out
    info = json.loads((tmp_path/"exp"/"dl4smlm.json").read_text())
    assert info["upsampling"] == 4 and info["pixel_nm"] == 100.0
    assert exit_code(["export", "fid-storm-x4-emccd", "--out", tmp_path/"exp", "--format", "torchscript"]) == 2   # exists: refused
