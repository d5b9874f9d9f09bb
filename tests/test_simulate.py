"Tests of dl4smlm.simulate beyond the lesson: bad input, round trips, reproducibility, properties."
import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_close as assert_close, test_eq as assert_eq
from scipy.signal import convolve2d
from scipy.special import erf

from dl4smlm.camera import make_camera
from dl4smlm.crlb import crlb, mortensen_precision
from dl4smlm.simulate import (PSF, GROUND_TRUTH_COLUMNS, GaussianPSF, Simulation, SimulationConfig, expected_photons,
                              gaussian_kernel, render_heatmap, render_spikes, simulate)
from dl4smlm.structures import background_map, blink_states, sample_photons


def one_emitter(x, y, photons=3e5, sigma=110.0, frame=1):
    return pd.DataFrame({"id": [1], "frame": [frame], "x [nm]": [x], "y [nm]": [y], "sigma [nm]": [sigma],
                         "intensity [photon]": [photons]})


def centroid(image, pixel):
    rows, cols = np.indices(image.shape)
    return (image * (cols + 0.5)).sum() / image.sum() * pixel, (image * (rows + 0.5)).sum() / image.sum() * pixel


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("field, value", [
    ("frames", 0), ("frames", 2.5), ("height", 0), ("width", -3), ("pixel_nm", 0), ("density", -1), ("photons", 0),
    ("photons_sd", -1), ("photons_distribution", "poisson"), ("sigma_nm", -110), ("sigma_sd_nm", -1),
    ("background", -0.1), ("background_profile", "linear"), ("background_corner", 0), ("background_corner", 1.5),
    ("camera", "ccd"), ("structure", "grid"), ("filaments", 0), ("filament_persistence_nm", 0), ("clusters", 0),
    ("cluster_radius_nm", -5), ("blinking", "yes"), ("label_density", 0), ("on_frames", 0.5), ("seed", -1),
    ("seed", 1.5), ("density", float("nan")), ("frames", True)])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"SimulationConfig.{field}: expected"):
        SimulationConfig(**{field: value})


def test_config_rejects_bad_camera_params():
    with pytest.raises(ValueError, match="unknown parameter"): SimulationConfig(camera="scmos", camera_params={"em_gain": 10})
    with pytest.raises(ValueError, match="qe"): SimulationConfig(camera_params={"qe": 0})
    with pytest.raises(ValueError, match="camera_params"): SimulationConfig(camera_params=[1, 2])


def test_blinking_needs_enough_fluorophores():
    with pytest.raises(ValueError, match="label_density"):
        SimulationConfig(blinking=True, density=2.0, label_density=2.5, on_frames=1.0)
    SimulationConfig(blinking=True, density=2.0, label_density=4.0, on_frames=1.0)          # p_on = 1: allowed


@pytest.mark.parametrize("cfg", [
    SimulationConfig(),
    SimulationConfig(frames=3, height=20, width=30, pixel_nm=160.0, density=0.5, photons=800, photons_sd=0,
                     photons_distribution="lognormal", sigma_nm=150, sigma_sd_nm=15, background=5,
                     background_profile="gaussian", background_corner=0.3, camera="scmos",
                     camera_params={"read_noise": 2.1, "baseline": 400}, structure="filaments", filaments=2,
                     blinking=True, label_density=10, on_frames=5, seed=123),
    SimulationConfig(camera="ideal", structure="clusters", clusters=3, cluster_radius_nm=80.0)])
def test_config_round_trips_through_json(cfg):
    d = cfg.to_dict()
    assert_eq(json.loads(json.dumps(d)), d)
    assert_eq(SimulationConfig.from_dict(json.loads(json.dumps(d))), cfg)
    assert_eq(SimulationConfig.from_dict(d).to_dict(), d)
    assert_eq(set(d), {f.name for f in dataclasses.fields(SimulationConfig)})
    assert_eq(d["camera_params"], make_camera(cfg.camera, **cfg.camera_params).params())   # every camera parameter


def test_config_from_dict_errors_and_defaults():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['gain'\]"): SimulationConfig.from_dict({"gain": 3})
    with pytest.raises(ValueError, match="expected a dict"): SimulationConfig.from_dict([("frames", 3)])
    assert_eq(SimulationConfig.from_dict({"frames": 3}), SimulationConfig(frames=3))
    assert_eq(SimulationConfig.from_dict({"frames": 3.0}).frames, 3)          # an integral float from JSON is fine
    assert isinstance(SimulationConfig(photons=2000).photons, float)


def test_config_camera_params_are_canonical():
    cfg = SimulationConfig(camera_params={"em_gain": 300.0, "read_noise": 50})
    assert_eq(cfg.camera_params, {"read_noise": 50.0})                         # defaults are not repeated
    assert_eq(cfg.make_camera().read_noise, 50.0)
    assert_eq(dataclasses.replace(SimulationConfig(), camera="scmos").camera, "scmos")
    assert_eq(simulate(SimulationConfig(frames=1, camera_params={"em_gain": 100}), camera="ideal").camera.name, "ideal")


# ---------------------------------------------------------------- PSF
def test_psf_matches_the_erf_formula():
    x0, y0, s, n = 7.3, 4.8, 1.2, 1500.0
    k = np.arange(12)
    de = lambda c: 0.5 * (erf((k + 1 - c) / (math.sqrt(2) * s)) - erf((k - c) / (math.sqrt(2) * s)))
    assert_close(GaussianPSF().render(x0, y0, n, s, 12, 12), n * np.outer(de(y0), de(x0)), eps=2e-3)


def test_psf_emitters_near_and_beyond_the_border():
    psf = GaussianPSF()
    half = psf.render(0.0, 10.0, 1000.0, 1.0, 20, 20)                         # on the left edge: half the light
    assert_close(half.sum(), 500.0, eps=0.5)
    assert_eq(psf.render(-50.0, 10.0, 1000.0, 1.0, 20, 20).sum(), 0.0)       # far outside: nothing
    assert_eq(psf.render([3.0, 300.0], [3.0, 3.0], 10.0, 1.0, 8, 8, frame=[0, 1], n_frames=2)[1].sum(), 0.0)


def test_psf_matmul_and_scatter_agree():
    rng = np.random.default_rng(9)
    n = 3000
    x, y = rng.uniform(-5, 45, n), rng.uniform(-5, 35, n)                    # some beyond the border
    args = (x, y, rng.uniform(100, 5000, n), rng.uniform(0.7, 2.0, n), 30, 40)
    frame = rng.integers(0, 7, n)
    a = GaussianPSF(method="matmul").render(*args, frame=frame, n_frames=7)
    b = GaussianPSF(method="scatter").render(*args, frame=frame, n_frames=7)
    assert_close(a, b, eps=0.05)
    assert_close(GaussianPSF().render(*args, frame=frame, n_frames=7), a, eps=0.05)
    assert_eq(a.dtype, np.float32); assert_eq(b.dtype, np.float32)


def test_psf_rejects_bad_input():
    with pytest.raises(ValueError, match="frame"): GaussianPSF().render([1, 2], [1, 2], 1, 1, 5, 5, frame=[0], n_frames=1)
    with pytest.raises(ValueError, match="sigma_px"): GaussianPSF().render(1, 1, 1, 0.0, 5, 5)
    with pytest.raises(ValueError, match="cutoff"): GaussianPSF(cutoff=0)
    with pytest.raises(ValueError, match="method"): GaussianPSF(method="fft")


@pytest.mark.parametrize("seed", range(5))
def test_centroid_of_a_simulated_frame_gives_the_position_within_1nm(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(800, 5600, 2)
    cfg = SimulationConfig(frames=1, background=0.0, camera="ideal", sigma_nm=rng.uniform(90, 160))
    frame = make_camera("ideal").apply(expected_photons(one_emitter(x, y, sigma=cfg.sigma_nm), cfg), rng)[0]
    assert frame.max() < 65535                                                   # not saturated
    cx, cy = centroid(frame.astype(float), 100.0)
    assert_close(cx, x, eps=1.0); assert_close(cy, y, eps=1.0)


class DeltaPSF(PSF):
    "All photons in the pixel containing the emitter: any PSF can plug into the simulator."
    def render(self, x_px, y_px, photons, sigma_px, height, width, frame=None, n_frames=None):
        x = np.atleast_1d(x_px); y = np.broadcast_to(y_px, x.shape); n = np.broadcast_to(photons, x.shape)
        fr = np.zeros(x.shape, int) if frame is None else np.asarray(frame)
        out = np.zeros((1 if frame is None else n_frames, height, width), np.float32)
        ok = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        np.add.at(out, (fr[ok], y[ok].astype(int), x[ok].astype(int)), n[ok])
        return out[0] if frame is None else out


def test_simulate_takes_any_psf():
    sim = simulate(SimulationConfig(frames=5, background=0.0, camera="ideal", photons=1e4, photons_sd=0), psf=DeltaPSF())
    assert_close(sim.expected(), 1e4 * sim.spikes(upsampling=1), eps=1e-2)   # the PSF and the f = 1 spikes agree
    assert_close(sim.frames.sum() / len(sim.ground_truth), 1e4, eps=100)


# ---------------------------------------------------------------- emitters
def test_photon_distributions():
    rng = np.random.default_rng(0)
    logn = sample_photons(200_000, 2000, 800, "lognormal", rng)
    assert_close(logn.mean(), 2000, eps=15); assert_close(logn.std(), 800, eps=15)
    assert np.mean((logn - logn.mean()) ** 3) > 0                              # right-skewed
    assert_close(sample_photons(200_000, 2000, 0, "exponential", rng).mean(), 2000, eps=20)
    assert_eq(sample_photons(10, 500, 0, "normal", rng), np.full(10, 500.0))


def test_blink_states_extremes():
    assert_eq(blink_states(10, 5, 0.0, 0.5, 0).any(), False)                   # never switches on
    s = blink_states(10, 5, 1.0, 0.0, 0)
    assert_eq(s.all(), True)                                                   # on for good


def test_sigma_jitter_and_photons_in_the_table():
    sim = simulate(SimulationConfig(frames=200, sigma_sd_nm=20.0, photons_distribution="lognormal", seed=3))
    s = sim.ground_truth["sigma [nm]"]
    assert_close(s.mean(), 110.0, eps=1.5); assert_close(s.std(), 20.0, eps=1.5); assert s.min() >= 55.0
    assert_close(sim.ground_truth["intensity [photon]"].mean(), 2000, eps=30)


def test_fresh_emitters_every_frame_without_blinking():
    gt = simulate(SimulationConfig(frames=3, seed=4)).ground_truth
    a, b = (gt[gt.frame == f][["x [nm]", "y [nm]"]].to_numpy() for f in (1, 2))
    assert not np.isin(a, b).any()


def test_blinking_reuses_fixed_fluorophores():
    sim = simulate(SimulationConfig(frames=50, blinking=True, label_density=10.0, on_frames=4.0, seed=5))
    gt, fl = sim.ground_truth, sim.fluorophores
    assert_eq(list(gt.columns), GROUND_TRUTH_COLUMNS)
    assert_eq(gt["id"].to_numpy(), np.arange(1, len(gt) + 1))
    rows = fl.set_index("id").loc[sim.fluorophore_ids]
    assert_eq(gt["x [nm]"].to_numpy(), rows["x [nm]"].to_numpy())
    assert_eq(gt["sigma [nm]"].to_numpy(), rows["sigma [nm]"].to_numpy())
    assert_eq(sim.states[gt["frame"] - 1, sim.fluorophore_ids - 1].all(), True)
    assert_eq(len(gt), int(sim.states.sum()))
    assert gt.groupby(sim.fluorophore_ids).size().max() > 1                      # molecules come back


# ---------------------------------------------------------------- simulate
@pytest.mark.parametrize("changes", [{}, {"structure": "filaments"}, {"structure": "clusters", "camera": "scmos"},
                                     {"blinking": True, "camera": "ideal", "background_profile": "gaussian"}])
def test_same_seed_same_frames_and_table(changes):
    cfg = dataclasses.replace(SimulationConfig(frames=300, height=32, width=40, seed=11), **changes)
    a, b = simulate(cfg, workers=1), simulate(cfg, workers=2)                   # 300 frames of 32×40 px: 2 chunks
    assert_eq(a.frames, b.frames)
    pd.testing.assert_frame_equal(a.ground_truth, b.ground_truth)
    c = simulate(dataclasses.replace(cfg, seed=12))
    assert (c.frames != a.frames).any()
    assert_eq(a.frames.dtype, np.uint16); assert_eq(a.frames.shape, (300, 32, 40))
    gt = a.ground_truth
    assert_eq(list(gt.columns), GROUND_TRUTH_COLUMNS)
    assert gt["frame"].between(1, 300).all() and gt["frame"].is_monotonic_increasing
    assert gt["x [nm]"].between(0, 4000, inclusive="left").all() and gt["y [nm]"].between(0, 3200, inclusive="left").all()


def test_simulate_changes_and_empty_fields():
    sim = simulate(frames=2, height=8, width=9, density=0.0)
    assert_eq(len(sim.ground_truth), 0); assert_eq(sim.frames.shape, (2, 8, 9))
    assert_eq(sim.spikes(4).shape, (2, 32, 36))
    assert_close(sim.photons().mean(), 20.0, eps=0.5)
    assert "Simulation(2 frames of 8×9 px, 0 emitters" in repr(sim)
    assert isinstance(sim, Simulation)


def test_expected_and_gaussian_background():
    sim = simulate(SimulationConfig(frames=4, background=30.0, background_profile="gaussian", background_corner=0.2, seed=2))
    e = sim.expected()
    assert_eq(sim.expected([3]), e[2:3])
    bg = background_map(64, 64, 30.0, "gaussian", 0.2)
    assert_eq((e >= bg - 1e-4).all(), True)
    assert_close(bg[0, 0], 30.0 * 0.2 ** ((31.5 / 32) ** 2), eps=1e-4)     # corner pixel centre, almost at the corner
    assert_close(bg[31:33, 31:33], np.full((2, 2), 30.0 * 0.2 ** (0.5 ** 2 / 32 ** 2)), eps=1e-4)
    assert_close(sim.photons().mean(), e.mean(), eps=0.3)
    with pytest.raises(ValueError, match="background_profile"): background_map(4, 4, 1.0, "linear")


# ---------------------------------------------------------------- cameras
@pytest.mark.parametrize("name", ["emccd", "scmos", "ideal"])
@pytest.mark.parametrize("level", [0.5, 20.0, 300.0])
def test_to_photons_is_unbiased(name, level):
    cam = make_camera(name)
    ph = cam.to_photons(cam.apply(np.full((40, 64, 64), level, np.float32), np.random.default_rng(0)))
    assert_eq(ph.dtype, np.float32)
    assert_close(ph.mean(), level, eps=0.02 * level + 0.02)


def test_emccd_chain_statistics():
    cam = make_camera("emccd")
    adu = cam.apply(np.full((50, 64, 64), 100.0, np.float32), np.random.default_rng(1)).astype(float)
    # mean ADU = baseline + (qe·N + cic)·gain / 45 − ½; variance ≈ F²·qe·N·(gain/45)² + (74.4/45)²
    assert_close(adu.mean(), 100 + (90.002 * 300 / 45) - 0.5, eps=0.5)
    assert_close(adu.var() / (2 * 90 * (300 / 45) ** 2 + (74.4 / 45) ** 2 + 1 / 12), 1.0, eps=0.03)
    dark = make_camera("emccd", cic=0.0).apply(np.zeros(100_000, np.float32), np.random.default_rng(2)).astype(float)
    assert_close(dark.std(), math.sqrt((74.4 / 45) ** 2 + 1 / 12), eps=0.03)        # read noise only: 0 electrons stay 0


def test_camera_saturates_and_rejects_bad_input():
    for name in ("emccd", "scmos", "ideal"):
        out = make_camera(name).apply(np.full(4, 1e8, np.float32), np.random.default_rng(0))
        assert_eq(out.dtype, np.uint16); assert_eq(out, np.full(4, 65535, np.uint16))
        with pytest.raises(ValueError, match="photons"): make_camera(name).apply(np.array([-1.0]), np.random.default_rng(0))
    with pytest.raises(ValueError, match="em_gain"): make_camera("emccd", em_gain=0.5)
    with pytest.raises(ValueError, match="e_per_adu"): make_camera("scmos", e_per_adu=0)
    with pytest.raises(ValueError, match="unknown parameter"): make_camera("ideal", qe=0.9)


def test_camera_dicts_and_excess_noise():
    for name, f2 in (("emccd", 2.0), ("scmos", 1.0), ("ideal", 1.0)):
        cam = make_camera(name)
        assert_eq(cam.name, name); assert_eq(cam.excess_noise, f2)
        assert_eq(make_camera(**json.loads(json.dumps(cam.to_dict()))), cam)
    assert_eq(make_camera("emccd", em_gain=150).adu_per_photon, 3.0)


# ---------------------------------------------------------------- targets
def test_render_spikes_conventions():
    t = pd.DataFrame({"frame": [1, 2, 2, 0, 3], "x [nm]": [12.4, 12.5, 12.5, 5.0, 5.0], "y [nm]": [0.0, 799.99, 799.99, 5.0, 5.0]})
    sp = render_spikes(t, frames=2, height=8, width=8, pixel_nm=100.0, upsampling=8)
    assert_eq(sp.shape, (2, 64, 64)); assert_eq(sp.dtype, np.float32)
    assert_eq(sp[0, 0, 0], 1.0)                                  # 12.4 nm: first fine pixel (12.5 nm wide)
    assert_eq(sp[1, 63, 1], 2.0)                                 # two emitters in one fine pixel add up
    assert_eq(sp.sum(), 3.0)                                     # frames 0 and 3 are outside 1..2
    assert_eq(render_spikes(t, 2, 8, 8, 100.0, 1)[1, 7, 0], 2.0)
    with pytest.raises(ValueError, match="upsampling"): render_spikes(t, 2, 8, 8, 100.0, 2.5)
    with pytest.raises(ValueError, match="x \\[nm\\]"): render_spikes(t.rename(columns={"x [nm]": "x"}), 2, 8, 8)


@pytest.mark.parametrize("size, sigma", [(1, 1.0), (3, 0.5), (7, 1.0), (9, 2.0)])
def test_gaussian_kernel_is_centred_and_normalised(size, sigma):
    k = gaussian_kernel(size, sigma)
    assert_eq(k.shape, (size, size)); assert_eq(k.dtype, np.float32)
    assert_close(float(k.sum()), 1.0, eps=1e-6)
    assert_eq(np.unravel_index(k.argmax(), k.shape), (size // 2, size // 2))
    assert_eq(k, k.T); assert_eq(k, k[::-1]); assert_eq(k, k[:, ::-1])


def test_gaussian_kernel_rejects_bad_sizes():
    for bad in (0, 4, 2.5):
        with pytest.raises(ValueError, match="size"): gaussian_kernel(bad)
    with pytest.raises(ValueError, match="sigma"): gaussian_kernel(7, 0.0)


def test_heatmap_is_a_zero_padded_centred_convolution():
    spikes = (np.random.default_rng(0).random((3, 20, 24)) > 0.95).astype(np.float32)
    hm = render_heatmap(spikes, sigma_px=1.3, size=5, scale=50.0)
    ref = np.stack([convolve2d(s, gaussian_kernel(5, 1.3), mode="same", boundary="fill") * 50 for s in spikes])
    assert_eq(hm.shape, spikes.shape); assert_eq(hm.dtype, np.float32)
    assert_close(hm, ref, eps=1e-4)
    assert_eq(render_heatmap(spikes[0]).shape, (20, 24))
    with pytest.raises(ValueError, match="spikes"): render_heatmap(np.zeros(5))


@pytest.mark.parametrize("f", [2, 4, 8])
def test_targets_recover_positions_within_quantisation(f):
    rng = np.random.default_rng(f)
    q = 100.0 / f
    for x, y in rng.uniform(500, 5900, (25, 2)):
        sp = render_spikes(one_emitter(x, y), 1, 64, 64, 100.0, f)[0]
        for target in (sp, render_heatmap(sp)):
            cx, cy = centroid(target, q)
            assert abs(cx - x) <= q / 2 + 1e-6 and abs(cy - y) <= q / 2 + 1e-6


# ---------------------------------------------------------------- CRLB
def test_crlb_reference_values_and_mortensen():
    assert_close(crlb(1000, 10, 100, 100), 4.1, eps=0.05)
    assert_close(crlb(2000, 10, 100, 100), 2.7, eps=0.05)
    assert_close(crlb(2000, 50, 100, 100, excess_noise=2.0), 4.8, eps=0.1)
    n, b = np.meshgrid(np.logspace(2, 5, 7), [0.0, 1.0, 20.0, 200.0])
    for sigma, pixel in ((110.0, 100.0), (150.0, 160.0), (90.0, 65.0)):
        ratio = crlb(n, b, sigma, pixel) / mortensen_precision(n, b, sigma, pixel)
        assert_close(ratio, np.ones_like(ratio), eps=0.03)
    assert (mortensen_precision(n, b, estimator="lsq") > mortensen_precision(n, b)).all()


def test_crlb_vectorises_and_validates():
    out = crlb(np.array([500.0, 1000.0, 2000.0]), 20.0)
    assert_eq(out.shape, (3,)); assert (np.diff(out) < 0).all()
    assert isinstance(crlb(1000, 20), float)
    assert_close(crlb(1000, 20, size=21), crlb(1000, 20), eps=1e-3)        # the default window is large enough
    with pytest.raises(ValueError, match="photons"): crlb(0, 20)
    with pytest.raises(ValueError, match="estimator"): mortensen_precision(1000, 20, estimator="ml")


def test_camera_excess_noise_feeds_crlb():
    sim = simulate(frames=1)
    assert_close(crlb(2000, 20, excess_noise=sim.camera.excess_noise), math.sqrt(2) * crlb(2000, 20), eps=1e-9)
