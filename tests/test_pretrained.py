"""The bundled pretrained models: every recipe bundled as tools/train_pretrained.py makes it, safe to load, small, calibrated,
usable by name from Python and the command line, and silent on frames without molecules."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dl4smlm.io import read_stack
from dl4smlm.tables import read_localizations
from dl4smlm.predict import predict_checkpoint
from dl4smlm.checkpoint import bundled_path, weights_dir
from dl4smlm.pretrained import PRETRAINED, bundled_models, describe
from dl4smlm.simulate import SimulationConfig, simulate
from dl4smlm.checkpoint import load_checkpoint, load_model

ROOT = Path(__file__).resolve().parent.parent
EXE = str(Path(sys.executable).parent/"dl4smlm")
sys.path.insert(0, str(ROOT/"tools"))
from train_pretrained import matches  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def test_every_recipe_is_bundled_as_the_script_makes_it():
    assert bundled_models() == list(PRETRAINED)
    for name, recipe in PRETRAINED.items():
        path = bundled_path(name)
        assert path.stat().st_size < 10e6
        ck = torch.load(path, map_location="cpu", weights_only=True)       # plain tensors and data: loads with weights_only
        assert matches(load_checkpoint(path), recipe), f"{name}: the bundled file was not made by its recipe; rerun tools/train_pretrained.py"
        assert ck["resume"] is None and ck["normalizer"]["frame_scaling"] == "photons"
    assert sorted(p.stem for p in weights_dir().glob("*.pt")) == sorted(PRETRAINED)   # nothing bundled without a recipe


def test_names_work_where_paths_do():
    name = "fid-storm-x4-emccd"
    model = load_model(name)
    assert model.name == "fid-storm" and model.upsampling == 4 and model.calibration["threshold"] > 0
    assert bundled_path("no-such-model") is None
    with pytest.raises(FileNotFoundError, match="no-such-model"): load_model("no-such-model")


def test_bundled_model_localizes_the_sample_data():
    frames, gt = read_stack(ROOT/"data"/"frames.tif"), read_localizations(ROOT/"data"/"ground_truth.csv")
    pred = predict_checkpoint("fid-storm-x8-emccd", frames[:10], device="cpu", progress=False)
    n_true = int((gt["frame"] <= 10).sum())
    assert 0.5 * n_true < len(pred.localizations) < 1.5 * n_true


@pytest.mark.parametrize("camera", ["emccd", "scmos"])
def test_background_only_frames_give_no_localization(camera):
    sim = simulate(SimulationConfig(frames=20, density=0.0, background=20.0, camera=camera, seed=3))
    pred = predict_checkpoint(f"fid-storm-x4-{camera}", sim.frames, device="cpu", progress=False)
    assert len(pred.localizations) == 0


def test_models_command_lists_every_bundled_file():
    r = subprocess.run([EXE, "models"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert [l.split()[0] for l in lines] == list(PRETRAINED)
    assert all("emitters/µm²" in l and "photons" in l and "threshold" in l for l in lines)
    assert describe(load_checkpoint("deep-storm-x4-scmos")).startswith("deep-storm ×4, scmos camera, 100 nm pixels")
