"""Exported models (TorchScript, ONNX) match PyTorch on photon and min–max checkpoints; the BioImage Model Zoo package
validates; existing folders are refused; a failed export leaves nothing."""
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import dl4smlm.export as export
from dl4smlm.data import SimulatedDataset
from dl4smlm.export import export_checkpoint, localize_exported, read_export, size_multiple, validate_bioimageio
from dl4smlm.localize import localize_heatmaps
from dl4smlm.simulate import SimulationConfig, simulate
from dl4smlm.checkpoint import load_model
from dl4smlm.train import Trainer

torch.set_num_threads(min(2, torch.get_num_threads()))
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")   # TorchScript is deprecated, still what deepImageJ reads


def _tiny(tmp_path, normalization, model="fid-storm"):
    "A checkpoint of a small model trained one epoch of 8 patches on 32×32 simulated patches (a checkpoint must finish an epoch)."
    data = SimulatedDataset(SimulationConfig(height=32, width=32), 8, upsampling=4, patch_size=16, normalization=normalization, seed=0)
    kwargs = {"blocks": 2} if model == "fid-storm" else {}
    trainer = Trainer(model, "l1l2", data, None, epochs=1, batch_size=8, device="cpu", progress=False, model_kwargs=kwargs)
    trainer.fit()
    return trainer.save(tmp_path / f"{normalization}.pt", resume=False)


def _pytorch(ckpt, frames):
    model = load_model(ckpt)
    with torch.inference_mode(): return model(model.normalizer(torch.from_numpy(frames.astype(np.float32))[:, None])).numpy()


def test_photon_checkpoint_exports_match_pytorch_and_localize_the_same(tmp_path):
    ckpt = _tiny(tmp_path, "photons")
    frames = simulate(SimulationConfig(frames=3, height=24, width=40, density=2.0, seed=3)).frames
    r = export_checkpoint(ckpt, tmp_path / "out")
    assert set(r["max_abs_difference"]) == {"torchscript", "onnx"}
    assert all(d < 1e-4 for d in r["max_abs_difference"].values())
    reference = _pytorch(ckpt, frames)                           # frames of a size neither traced nor verified: dynamic axes
    ts = torch.jit.load(str(r["files"]["torchscript"]))
    with torch.inference_mode(): got_ts = ts(torch.from_numpy(frames.astype(np.float32))[:, None]).numpy()
    session = onnxruntime.InferenceSession(str(r["files"]["onnx"]), providers=["CPUExecutionProvider"])
    got_onnx = session.run(None, {"frames": frames[:, None].astype(np.float32)})[0]
    assert got_ts.shape == got_onnx.shape == reference.shape == (3, 1, 96, 160)
    assert np.abs(got_ts - reference).max() < 1e-4 and np.abs(got_onnx - reference).max() < 1e-4
    info = read_export(tmp_path / "out")
    assert info["normalizer"]["frame_scaling"] == "photons" and info["upsampling"] == 4 and info["input"]["size_multiple"] == 1
    loc = info["localization"]
    threshold = float(np.quantile(reference, 0.999))             # an untrained model: a threshold that finds some peaks
    info["localization"] = {**loc, "threshold": threshold, "bias_nm": [1.5, -2.0]}
    mine = localize_exported(got_onnx, info)
    theirs = localize_heatmaps(torch.from_numpy(reference), 4, 100.0, threshold, loc["radius"], "cog")
    assert len(mine) == len(theirs) > 0
    np.testing.assert_allclose(mine["x [nm]"] + 1.5, theirs["x [nm]"], atol=1e-3)
    np.testing.assert_allclose(mine["y [nm]"] - 2.0, theirs["y [nm]"], atol=1e-3)


def test_min_max_checkpoint_exports_match_pytorch_and_package_validates(tmp_path):
    ckpt = _tiny(tmp_path, "min-max")
    assert [size_multiple("deep-storm", f) for f in (2, 4, 8)] == [4, 2, 1] and size_multiple("u-storm", 2) == 2
    r = export_checkpoint(ckpt, tmp_path / "out", bioimageio=True)
    assert all(d < 1e-4 for d in r["max_abs_difference"].values()) and r["size_multiple"] == 1
    frames = simulate(SimulationConfig(frames=2, height=17, width=23, seed=5)).frames
    session = onnxruntime.InferenceSession(str(r["files"]["onnx"]), providers=["CPUExecutionProvider"])
    x = frames[:, None].astype(np.float32)
    got = session.run(None, {"frames": x})[0]
    assert np.abs(got - _pytorch(ckpt, frames)).max() < 1e-4
    np.testing.assert_allclose(session.run(None, {"frames": 2 * x + 30})[0], got, atol=1e-4)   # the graph scales each frame itself
    package = tmp_path / "out" / "bioimageio"
    assert validate_bioimageio(package) is None
    rdf = (package / "rdf.yaml").read_text()
    assert "step: 1" in rdf and "10.1364/OPTICA.5.000458" in rdf and "inside the graph" in rdf
    assert np.load(package / "test_output.npy").shape[-2:] == tuple(4 * s for s in np.load(package / "test_input.npy").shape[-2:])
    (package / "test_output.npy").write_bytes(b"not an array")   # a broken package does not validate
    assert validate_bioimageio(package) is not None


def test_an_earlier_export_is_refused_and_other_files_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    (out / "dl4smlm.json").write_text("{}")                         # an earlier export: replaced only with overwrite
    with pytest.raises(FileExistsError, match="overwrite"):
        export_checkpoint("fid-storm-x4-emccd", out, formats="torchscript")
    assert sorted(p.name for p in out.iterdir()) == ["dl4smlm.json", "mine.txt"] and (out / "mine.txt").read_text() == "keep"
    export_checkpoint("fid-storm-x4-emccd", out, formats="torchscript", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["dl4smlm.json", "mine.txt", "model.torchscript.pt"]
    assert (out / "mine.txt").read_text() == "keep"                # --overwrite replaces the export's files, never others


def test_bad_input_is_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="formats"): export_checkpoint("fid-storm-x4-emccd", tmp_path / "a", formats=("tflite",))
    with pytest.raises(ValueError, match="multiples of 2"):
        export_checkpoint("deep-storm-x4-emccd", tmp_path / "b", sample_frames=np.zeros((2, 33, 32)))
    with pytest.raises(ValueError, match="sample_frames"): export_checkpoint("fid-storm-x4-emccd", tmp_path / "c", sample_frames=np.zeros(5))
    assert list(tmp_path.iterdir()) == []


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    ckpt = _tiny(tmp_path, "photons")
    out = tmp_path / "exports" / "out"
    out.parent.mkdir()
    monkeypatch.setattr(export, "TOLERANCE", 0.0)                  # no file can pass: the check must fail after writing
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_checkpoint(ckpt, out, formats="torchscript")
    assert list(out.parent.iterdir()) == []
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="differs from PyTorch"):  # with overwrite: the old folder survives a failure
        export_checkpoint(ckpt, out, formats="torchscript", overwrite=True)
    assert [p.name for p in out.parent.iterdir()] == ["out"] and (out / "old.txt").read_text() == "old"
    monkeypatch.setattr(export, "TOLERANCE", 1e-4)
    export_checkpoint(ckpt, out, formats="torchscript", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["dl4smlm.json", "model.torchscript.pt", "old.txt"]   # a file not the export's stays
