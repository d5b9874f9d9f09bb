"""Photon-calibrated input, parameter ranges, calibrated detection (threshold, window, bias) and old checkpoints."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dl4smlm.calibrate import AnnotatedStack, calibration_stacks, choose, default_thresholds, refine_window, sweep
from dl4smlm.compare import OracleModel
from dl4smlm.data import SimulatedDataset, check_ranges, draw_config
from dl4smlm.normalize import Normalizer, PhotonNormalizer, normalizer_from_dict
from dl4smlm.evaluate import assess
from dl4smlm.localize import DEFAULT_THRESHOLD, localize_heatmaps, predict
from dl4smlm.predict import predict_checkpoint
from dl4smlm.simulate import SimulationConfig, simulate
from dl4smlm.checkpoint import load_checkpoint, load_model, save_checkpoint
from dl4smlm.workflow import train_from_folder

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.mark.parametrize("camera", ["emccd", "scmos", "ideal"])
def test_photon_conversion_inverts_the_camera(camera):
    sim = simulate(SimulationConfig(frames=40, density=1.0, background=30.0, camera=camera, seed=4))
    n = PhotonNormalizer.fit(sim.frames, sim.camera)
    expected = sim.expected()
    assert abs(n.mean / expected.mean() - 1) < 0.01                        # photons, not ADU: the mean within 1 %
    x = n(sim.frames)
    assert abs(x.mean()) < 1e-3 and abs(x.std() - 1) < 1e-3
    t = n(torch.as_tensor(sim.frames.astype(np.float32)))                   # the tensor path computes the same
    assert torch.allclose(t, torch.as_tensor(x), atol=1e-5)


def test_photon_normalizer_keeps_brightness_and_round_trips():
    cam = SimulationConfig().make_camera()
    n = PhotonNormalizer(cam.to_dict(), 30.0, 50.0)
    dark, bright = np.full((1, 8, 8), 100.0), np.full((1, 8, 8), 100.0)
    bright[0, 4, 4] = 5000.0
    assert n(dark)[0, 0, 0] == pytest.approx(n(bright)[0, 0, 0])            # a pixel's value does not depend on the others
    assert normalizer_from_dict(n.to_dict()) == n
    assert normalizer_from_dict({"mean": 0.2, "std": 0.1}) == Normalizer(0.2, 0.1)   # old checkpoints: min–max
    other = n.with_camera({"name": "scmos", "baseline": 400.0})
    assert other.mean == n.mean and other.camera["baseline"] == 400.0
    with pytest.raises(ValueError, match="frame scaling"): normalizer_from_dict({"frame_scaling": "log", "mean": 0, "std": 1})
    with pytest.raises(ValueError, match="camera"): PhotonNormalizer({"qe": 0.9}, 0.0, 1.0)


def test_ranges_are_checked_and_drawn_inside():
    with pytest.raises(ValueError, match="cannot be a range"): check_ranges({"pixel_nm": (90, 110)})
    with pytest.raises(ValueError, match="low <= high"): check_ranges({"density": (6, 0.1)})
    with pytest.raises(ValueError, match="low, high"): check_ranges({"density": 3})
    r = check_ranges({"density": (0.1, 6), "photons": (500, 5000), "background": (0, 100), "sigma_nm": (90, 130)})
    rng, cfg = np.random.default_rng(0), SimulationConfig(photons=2000.0, photons_sd=500.0)
    drawn = [draw_config(cfg, r, rng) for _ in range(2000)]
    d = np.array([c.density for c in drawn])
    assert d.min() >= 0.1 and d.max() <= 6
    assert abs(np.median(np.log(d)) - math.log(math.sqrt(0.6))) < 0.15     # log-uniform: median at the geometric centre
    assert all(abs(c.photons_sd / c.photons - 0.25) < 1e-9 for c in drawn[:50])
    s = np.array([c.sigma_nm for c in drawn])
    assert 90 <= s.min() and s.max() <= 130 and abs(np.median(s) - 110) < 2  # σ: uniform


def test_simulated_dataset_with_ranges_is_deterministic():
    cfg = SimulationConfig(height=24, width=24, seed=2)
    kw = dict(upsampling=2, patch_size=12, min_emitters=0, ranges={"density": (0.1, 6), "photons": (500, 5000)}, fit_frames=4)
    a, b = SimulatedDataset(cfg, 8, **kw), SimulatedDataset(cfg, 8, **kw)
    assert isinstance(a.normalizer, PhotonNormalizer) and a.normalizer == b.normalizer
    assert all(torch.equal(a[k][0], b[k][0]) and torch.equal(a[k][1], b[k][1]) for k in range(8))
    counts = [int((a[k][1] > 0).sum()) for k in range(8)]
    assert len(set(counts)) > 1                                            # the densities differ from patch to patch
    assert a.metadata["ranges"] == {"density": [0.1, 6.0], "photons": [500.0, 5000.0]}
    assert isinstance(SimulatedDataset(cfg, 4, normalization="min-max", fit_frames=2, upsampling=2, patch_size=12).normalizer, Normalizer)


class _Shifted(nn.Module):
    "The oracle's heat maps shifted by one fine pixel to the right: a model with a known bias of +q in x."
    def __init__(self, oracle):
        super().__init__()
        self.oracle = oracle
    def forward(self, x): return torch.roll(self.oracle(x), 1, dims=-1)


class _Noisy(nn.Module):
    "The oracle plus clutter made from the frame itself (the same whatever the batch): false peaks for the threshold to reject."
    def __init__(self, oracle):
        super().__init__()
        self.oracle = oracle
    def forward(self, x): return self.oracle(x) + 6.0 * torch.nn.functional.interpolate(torch.sigmoid(x), scale_factor=4, mode="bilinear")


@pytest.fixture(scope="module")
def stacks():
    cfg = SimulationConfig(frames=6, height=32, width=32, photons=3000.0, seed=8)
    sims = [simulate(cfg, density=d, seed=30 + i) for i, d in enumerate((0.5, 4.0))]
    return sims, [AnnotatedStack.from_simulation(s) for s in sims]


def test_calibration_picks_what_brute_force_picks(stacks):
    sims, st = stacks
    oracle = OracleModel(sims, upsampling=4)
    model = _Noisy(oracle)
    thresholds = np.linspace(1.0, 12.0, 12)
    cal = choose(sweep(model, oracle.normalizer, st, thresholds, radii=(1, 2)))
    best, best_j = None, -1.0                                                # brute force: predict and score every setting
    for r in (1, 2):
        for t in thresholds:
            js = []
            for sim in sims:
                pred = predict(model, sim.frames, oracle.normalizer, threshold=float(t), radius=r, device="cpu", progress=False)
                m = assess(sim.ground_truth, pred.localizations, (3200.0, 3200.0))
                js.append(m["jaccard_pct"] or 0.0)
            if np.mean(js) > best_j: best, best_j = (r, float(t)), float(np.mean(js))
    assert (cal["radius"], cal["threshold"]) == best
    assert cal["jaccard_pct"] == pytest.approx(best_j)


def test_calibration_measures_the_bias(stacks):
    sims, st = stacks
    oracle = OracleModel(sims, upsampling=4)
    cal = choose(sweep(_Shifted(oracle), oracle.normalizer, st, default_thresholds(), radii=(1,)))
    assert cal["bias_nm"][0] == pytest.approx(25.0, abs=3) and abs(cal["bias_nm"][1]) < 3   # one fine pixel: 100 nm / 4
    pred = predict(_Shifted(oracle), sims[0].frames, oracle.normalizer, threshold=cal["threshold"], device="cpu", progress=False,
                   bias_nm=cal["bias_nm"])
    m = assess(sims[0].ground_truth, pred.localizations, (3200.0, 3200.0))
    assert abs(m["mean_dx_nm"]) < 3


def _wide(sims, f=4, sigma_px=2.0):
    "An oracle whose heat maps hold a Gaussian blob of σ = 2 fine px at each molecule's true position (not its pixel's centre)."
    oracle = OracleModel(sims, upsampling=f)
    maps = []
    for sim in sims:
        c = sim.config
        q = c.pixel_nm / f
        yy, xx = (np.mgrid[0:c.height * f, 0:c.width * f] + 0.5) * q
        for k in range(len(sim.frames)):
            g = sim.ground_truth[sim.ground_truth["frame"] == k + 1]
            m = np.zeros(xx.shape, np.float32)
            for x, y in zip(g["x [nm]"], g["y [nm]"]): m += 16 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * (sigma_px * q) ** 2))
            maps.append(m)
    oracle.maps = torch.from_numpy(np.stack(maps))
    return oracle


def test_refinement_window_is_chosen_on_its_own(stacks):
    "Wide blobs: the 3 × 3 centre of gravity is pulled to pixel centres; refine_window picks a wider one, with the same peaks."
    sims, st = (v[:1] for v in stacks)                                       # the sparse stack: neighbours do not reach into the window
    model = oracle = _wide(sims)
    cal = choose(sweep(model, oracle.normalizer, st, default_thresholds(), radii=(1,)))
    win = refine_window(model, oracle.normalizer, st, cal)
    assert win["refine_radius"] > 1 and win["rmse_nm"][win["refine_radius"]] < 0.8 * win["rmse_nm"][1], win
    a = localize_heatmaps(model(oracle.normalizer(torch.as_tensor(sims[0].frames[:, None], dtype=torch.float32))).detach()[:, 0], 4, 100.0,
                          threshold=cal["threshold"], radius=1, refine_radius=win["refine_radius"])
    b = localize_heatmaps(model(oracle.normalizer(torch.as_tensor(sims[0].frames[:, None], dtype=torch.float32))).detach()[:, 0], 4, 100.0,
                          threshold=cal["threshold"], radius=1)
    assert len(a) == len(b) and not np.allclose(a["x [nm]"], b["x [nm]"])     # the same peaks, placed differently


def test_calibration_stacks_cover_densities_and_structures():
    st = calibration_stacks(SimulationConfig(height=32, width=32), {"photons": (500, 5000), "density": (0.1, 6)}, densities=(0.1, 2.0),
                            structures=("uniform", "filaments"))
    assert [s.name for s in st] == ["uniform 0.1/µm²", "uniform 2/µm²", "filaments 0.1/µm²", "filaments 2/µm²"]
    assert all(s.frames.shape[1:] == (64, 64) for s in st)                  # at least 64 × 64 px: room inside the scored border
    assert len(st[0].frames) > len(st[1].frames)                            # sparse stacks get more frames
    assert st[0].ground_truth["intensity [photon]"].mean() == pytest.approx(math.sqrt(500 * 5000), rel=0.1)


@pytest.fixture(scope="module")
def small_checkpoints(tmp_path_factory):
    "A photon-input checkpoint (calibrated) and a min–max one written the old way (no calibration)."
    d = tmp_path_factory.mktemp("ck")
    kw = dict(model="srcnn", upsampling=2, epochs=1, samples_per_epoch=32, patch_size=12, batch_size=8, device="cpu", progress=False,
              valid=0.25, test=0.0)
    cfg = SimulationConfig(height=24, width=24, seed=5)
    photons, _ = train_from_folder(simulate_config=cfg, out=d/"photons.pt", ranges={"density": (0.5, 4)}, **kw)
    old, _ = train_from_folder(simulate_config=cfg, out=d/"old.pt", normalization="min-max", calibrate=False, **kw)
    ck = load_checkpoint(old)
    assert "calibration" not in ck                                         # as checkpoints were written before calibration
    ck["normalizer"] = {"mean": ck["normalizer"]["mean"], "std": ck["normalizer"]["std"], "frame_scaling": "min-max"}
    save_checkpoint(old, ck)
    return photons, old


def test_training_stores_calibration_and_ranges(small_checkpoints):
    ck = load_checkpoint(small_checkpoints[0])
    assert ck["normalizer"]["frame_scaling"] == "photons" and ck["normalizer"]["camera"]["name"] == "emccd"
    assert ck["data"]["ranges"] == {"density": [0.5, 4.0]}
    cal = ck["calibration"]
    assert {"threshold", "radius", "bias_nm", "jaccard_pct", "per_stack", "stacks"} <= set(cal)
    assert cal["threshold"] in default_thresholds(ck["target"]).astype(float).tolist()


def test_old_checkpoints_predict_as_before(small_checkpoints):
    old = small_checkpoints[1]
    frames = simulate(SimulationConfig(frames=3, height=24, width=24, seed=9)).frames
    model = load_model(old)
    assert isinstance(model.normalizer, Normalizer) and model.calibration is None
    a = predict_checkpoint(old, frames, device="cpu", progress=False)
    b = predict(model, frames, model.normalizer, threshold=DEFAULT_THRESHOLD, device="cpu", progress=False)
    pd.testing.assert_frame_equal(a.localizations, b.localizations)
