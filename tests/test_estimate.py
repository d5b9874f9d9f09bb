"""dl4smlm.estimate: known settings recovered from simulated stacks, the simulation file round trip, range warnings, bad input."""
import json

import numpy as np
import pytest
import torch

from dl4smlm.estimate import (check_data_ranges, estimate_camera, estimate_frames, estimate_simulation, read_simulation_config,
                              sample_frames, write_estimate)
from dl4smlm.io import save_simulation
from dl4smlm.simulate import SimulationConfig, simulate

torch.set_num_threads(min(2, torch.get_num_threads()))

SETTINGS = [dict(camera="emccd", pixel_nm=100.0, sigma_nm=110.0, photons=2000.0, background=20.0),
            dict(camera="scmos", pixel_nm=160.0, sigma_nm=150.0, photons=1000.0, background=50.0),
            dict(camera="emccd", pixel_nm=65.0, sigma_nm=130.0, photons=4000.0, background=8.0)]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s['camera']}-{s['pixel_nm']:g}nm")
def test_estimate_recovers_known_settings(setting):
    truth = SimulationConfig(frames=40, height=48, width=48, density=0.5, photons_sd=0.25 * setting["photons"], seed=7, **setting)
    sim = simulate(truth)
    r = estimate_frames(sim.frames, sim.camera, pixel_nm=truth.pixel_nm, fit_molecules=150)
    assert r["sigma_nm"] == pytest.approx(truth.sigma_nm, rel=0.10)
    assert r["photons"] == pytest.approx(truth.photons, rel=0.20)
    assert r["background"] == pytest.approx(truth.background, rel=0.20)
    assert r["molecules"] >= 30 and r["corrected"]


def test_estimate_simulation_round_trips_through_json(tmp_path):
    sim = simulate(SimulationConfig(frames=30, height=40, width=40, density=0.5, seed=8))
    config, ranges, report = estimate_simulation(sim.frames, sim.camera, 100.0, fit_molecules=100, correct=False)
    assert (config.height, config.width, config.pixel_nm, config.camera) == (40, 40, 100.0, "emccd")
    for q in ("sigma_nm", "photons", "background", "density"):
        lo, hi = ranges[q]
        assert lo < getattr(config, q) < hi
    path = write_estimate(tmp_path / "sim.json", config, ranges, report)
    assert read_simulation_config(path) == (config, ranges)
    saved = json.loads(path.read_text())
    assert set(saved) == {"config", "ranges", "estimate", "dl4smlm_version"}
    folder = save_simulation(tmp_path / "stack", simulate(SimulationConfig(frames=2, height=16, width=16, pixel_nm=65.0)))
    assert read_simulation_config(folder / "simulation.json") == (SimulationConfig(frames=2, height=16, width=16, pixel_nm=65.0), None)
    assert read_simulation_config(folder)[0].pixel_nm == 65.0                       # the folder itself


def test_read_simulation_config_rejects_other_files(tmp_path):
    other = tmp_path / "model.json"
    other.write_text('{"model": "fid-storm"}')
    with pytest.raises(ValueError, match="expected a dl4smlm simulation file"): read_simulation_config(other)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a dl4smlm simulation file"): read_simulation_config(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text('{"config": {"sigma_nm": -5}}')
    with pytest.raises(ValueError, match="bad.json.*sigma_nm"): read_simulation_config(tmp_path / "bad.json")
    (tmp_path / "ranges.json").write_text('{"config": {}, "ranges": {"pixel_nm": [60, 70]}}')
    with pytest.raises(ValueError, match="ranges.json.*cannot be a range"): read_simulation_config(tmp_path / "ranges.json")
    with pytest.raises(FileNotFoundError): read_simulation_config(tmp_path / "missing.json")
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(ValueError, match="not valid JSON"): read_simulation_config(tmp_path / "text.json")


def test_check_data_ranges_warns_outside_only():
    ranges = {"sigma_nm": (90.0, 130.0), "photons": (500.0, 5000.0), "density": (0.1, 6.0)}
    inside = {"sigma_nm": 110.0, "photons": 2000.0, "background": 20.0, "density": 1.0}
    assert check_data_ranges(inside, ranges, config=SimulationConfig()) == []
    assert len(check_data_ranges({**inside, "sigma_nm": 140.0}, ranges)) == 1     # wider than the widest PSF trained on: no slack (issue 21)
    assert check_data_ranges({**inside, "sigma_nm": 85.0, "photons": 450.0, "density": 0.05}, ranges) == []   # narrower, dimmer, sparser: slack
    assert check_data_ranges({**inside, "sigma_nm": 140.0}, ranges, tolerance=0.1) == []   # one margin for all, as before
    (w,) = check_data_ranges({**inside, "sigma_nm": 120.0, "pixel_nm": 65.0}, ranges, config={"pixel_nm": 100.0})   # σ in pixels
    assert "1.85 px of 65 nm" in w
    (w,) = check_data_ranges({**inside, "sigma_nm": 165.0, "sigma_nm_range": [150.0, 180.0]}, ranges)
    assert "PSF σ 165 nm" in w and "90–130 nm" in w and "150–180" in w
    (w,) = check_data_ranges({**inside, "background": 80.0}, ranges, config=SimulationConfig())   # fixed at 20 in training
    assert "background 80" in w and "value 20" in w
    assert len(check_data_ranges({**inside, "photons": 100.0, "density": 20.0}, ranges)) == 2


def test_bad_input_errors():
    with pytest.raises(ValueError, match="at least one frame"): estimate_frames(np.zeros((0, 32, 32), np.uint16))
    with pytest.raises(ValueError, match="frames, height, width"): sample_frames(np.zeros((32, 32)))
    with pytest.raises(ValueError, match="camera"): estimate_frames(np.zeros((2, 32, 32)), camera="emccd")
    with pytest.raises(ValueError, match="NaN"): sample_frames(np.full((2, 16, 16), np.nan))
    flat = simulate(SimulationConfig(frames=60, height=32, width=32, seed=9))
    with pytest.raises(ValueError, match="pass baseline="): estimate_camera(flat.frames)
    with pytest.raises(ValueError, match="kind"): estimate_camera(flat.frames, kind="ccd")


def test_estimate_camera_with_known_baseline():
    sim = simulate(SimulationConfig(frames=60, height=32, width=32, camera="scmos", background=30.0, seed=10))
    cam = estimate_camera(sim.frames, "scmos", baseline=100.0)
    assert cam.adu_per_photon == pytest.approx(sim.camera.adu_per_photon, rel=0.05)


# ---- issue 21 item 4: the sCMOS gain solved exactly, read noise unknown; photons that merged pairs do not inflate; real cameras
@pytest.mark.parametrize("background, read_noise", [(5.0, 3.0), (100.0, 1.0)])
def test_scmos_gain_without_the_read_noise(background, read_noise):
    from dl4smlm.estimate import measure_gain
    s = simulate(SimulationConfig(frames=400, height=128, width=128, camera="scmos", camera_params={"read_noise": read_noise},
                                  background=background, seed=int(background)))
    true_g = 1 / s.camera.e_per_adu
    r = k3 = measure_gain(s.frames, "scmos", baseline=100.0)                  # the usual case: baseline from the spec sheet
    assert abs(r["gain"] / true_g - 1) < max(0.03, 3 * r["gain_se"] / true_g) and r["method"].startswith("third cumulant")
    assert r["gain_se"] / true_g < 0.02
    if background < 50: assert abs(r["read_noise"] / read_noise - 1) < 0.1
    r = measure_gain(s.frames, "scmos", baseline=100.0, read_noise=read_noise)   # the exact root when the read noise is known
    assert abs(r["gain"] / true_g - 1) < 0.01
    camera = estimate_camera(s.frames, "scmos", baseline=100.0)
    assert abs(camera.e_per_adu * k3["gain"] - 1) < 1e-6 and camera.read_noise >= 0    # the camera is what measure_gain found


def test_photons_on_crowded_filaments_are_not_inflated_by_merged_pairs():
    cfg = SimulationConfig(frames=100, structure="filaments", density=1.0, seed=7)
    s = simulate(cfg)
    r = estimate_frames(s.frames, s.camera, correct=False)
    assert r["photons_fits_mean"] > 1.15 * cfg.photons                      # a fifth or more of the isolated fits hold two molecules
    assert abs(r["photons"] / cfg.photons - 1) < 0.05 and r["merged_fraction"] > 0.1
    sparse = simulate(SimulationConfig(frames=100, density=0.2, seed=8))
    r = estimate_frames(sparse.frames, sparse.camera, correct=False)
    assert r["merged_fraction"] < 0.05 and abs(r["photons"] / 2000 - 1) < 0.05


def test_estimate_on_a_real_looking_scmos_with_hot_pixels():
    from dl4smlm.camera import SCMOSMapCamera, make_camera
    from dl4smlm.simulate import expected_photons
    rng = np.random.default_rng(3)
    gain = 2.17 * (1 + rng.normal(0, 0.03, (64, 64)))
    chip = SCMOSMapCamera(100 + rng.normal(0, 2, (64, 64)), (1.6 * gain * np.exp(rng.normal(0, 0.3, (64, 64)))) ** 2, gain, qe=0.8)
    cfg = SimulationConfig(frames=60, height=64, width=64, density=0.5, camera="scmos", seed=4)
    hot = np.zeros((64, 64), np.float32); hot[rng.integers(0, 64, 15), rng.integers(0, 64, 15)] = 300.0
    raw = chip.apply(expected_photons(simulate(cfg).ground_truth, cfg) + hot, rng)
    for camera in (chip, make_camera("scmos", e_per_adu=4 * 0.46, qe=0.8)):   # the calibration, and a spec sheet 4× off
        r = estimate_frames(raw, camera, fit_molecules=150)
        assert abs(r["sigma_nm"] / 110 - 1) < 0.1 and r["bad_pixels"] >= 15 and r["molecules"] >= 30
    assert r["camera"]["name"] == "scmos"
    assert abs(estimate_frames(raw, chip, fit_molecules=150)["photons"] / 2000 - 1) < 0.2
