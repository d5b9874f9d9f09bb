"""dl4smlm.fit: unbiased positions on isolated molecules, an uncertainty column that matches the errors, EMCCD and sCMOS,
σ fitting, clear errors for bad input, chunked = one chunk, and the 'mle' row of compare_models."""
import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_close as assert_close, test_eq as assert_eq

from dl4smlm.compare import compare_models
from dl4smlm.evaluate import match_localizations
from dl4smlm.fit import FIT_COLUMNS, ClassicalFitter, fit_frames, isolated_stack
from dl4smlm.tables import LOCALIZATION_COLUMNS
from dl4smlm.simulate import SimulationConfig, simulate


def _errors(stack, fits):
    pairs = match_localizations(stack.ground_truth, fits)
    return pairs, pairs["dx [nm]"].to_numpy(), pairs["dy [nm]"].to_numpy()


@pytest.mark.parametrize("camera", ["emccd", "scmos"])
def test_isolated_molecules_are_found_without_bias(camera):
    s = isolated_stack(frames=30, photons=3000, camera=camera, seed=1)      # 1,080 molecules
    fits = fit_frames(s.frames, s.camera, sigma_nm=110.0)
    pairs, dx, dy = _errors(s, fits)
    assert len(pairs) >= 0.99 * len(s.ground_truth)
    assert len(fits) == len(pairs)                                           # no false positives
    assert abs(dx.mean()) < 1.0 and abs(dy.mean()) < 1.0, (dx.mean(), dy.mean())
    assert_close(np.median(fits["intensity [photon]"]) / 3000, 1.0, eps=0.03)
    assert_close(np.median(fits["offset [photon]"]) / 20, 1.0, eps=0.05)


@pytest.mark.parametrize("camera", ["emccd", "scmos"])
def test_uncertainty_matches_the_spread_of_the_errors(camera):
    s = isolated_stack(frames=20, photons=5000, camera=camera, seed=2)
    fits = fit_frames(s.frames, s.camera, sigma_nm=110.0)
    pairs, dx, dy = _errors(s, fits)
    ratio = np.std(np.r_[dx, dy]) / fits.loc[pairs["localization"], "uncertainty [nm]"].mean()
    assert 0.8 <= ratio <= 1.25, ratio


def test_emccd_uncertainty_includes_the_excess_noise():
    kw = dict(frames=4, photons=3000, seed=3)
    em, sc = isolated_stack(camera="emccd", **kw), isolated_stack(camera="ideal", **kw)
    u_em = fit_frames(em.frames, em.camera, sigma_nm=110.0)["uncertainty [nm]"].median()
    u_id = fit_frames(sc.frames, sc.camera, sigma_nm=110.0)["uncertainty [nm]"].median()
    assert_close(u_em / u_id, np.sqrt(2 / 0.9), eps=0.08)                   # F²/qe on the variance


def test_fitted_sigma_is_recovered_within_5_percent():
    s = isolated_stack(frames=5, photons=3000, sigma_nm=140.0, camera="scmos", seed=4)
    fits = fit_frames(s.frames, s.camera, sigma_nm=110.0, fit_sigma=True)
    assert abs(fits["sigma [nm]"].median() / 140 - 1) < 0.05
    auto = fit_frames(s.frames, s.camera)                                    # σ measured on the frames
    assert abs(auto["sigma [nm]"].iloc[0] / 140 - 1) < 0.05


def test_columns_and_conventions():
    s = isolated_stack(frames=2, photons=3000, camera="ideal", seed=5)
    fits = fit_frames(s.frames.astype(np.float32), None, sigma_nm=110.0)     # camera=None: frames in photons
    assert_eq(tuple(fits.columns), FIT_COLUMNS)
    assert_eq(tuple(fits.columns[:len(LOCALIZATION_COLUMNS)]), LOCALIZATION_COLUMNS)
    assert_eq(sorted(fits["frame"].unique().tolist()), [1, 2])
    assert_eq(fits["id"].tolist(), list(range(1, len(fits) + 1)))


def test_molecules_at_the_edge_are_fitted_not_dropped():
    cfg = SimulationConfig(frames=1, height=16, width=16, camera="ideal", photons=4000, photons_sd=0, background=5)
    from dl4smlm.camera import make_camera
    from dl4smlm.simulate import expected_photons
    truth = pd.DataFrame({"frame": [1, 1], "x [nm]": [60.0, 1530.0], "y [nm]": [800.0, 70.0], "sigma [nm]": [110.0] * 2,
                          "intensity [photon]": [4000.0] * 2})
    frames = make_camera("ideal").apply(expected_photons(truth, cfg), np.random.default_rng(0))
    fits = fit_frames(frames, None, sigma_nm=110.0)
    assert_eq(len(fits), 2)
    pairs = match_localizations(truth, fits)
    assert_eq(len(pairs), 2)
    assert (pairs["distance [nm]"] < 30).all()


def test_chunks_give_the_same_table_as_one_chunk():
    s = simulate(SimulationConfig(frames=12, density=1.0, seed=6))
    one = fit_frames(s.frames, s.camera, sigma_nm=110.0)
    mm = np.lib.format.open_memmap(_tmp() / "stack.npy", "w+", np.uint16, s.frames.shape)
    mm[:] = s.frames
    chunked = fit_frames(mm, s.camera, sigma_nm=110.0, batch_frames=5)
    pd.testing.assert_frame_equal(one, chunked)


def _tmp():
    import tempfile
    from pathlib import Path
    return Path(tempfile.mkdtemp())


@pytest.mark.parametrize("kwargs, match", [
    (dict(frames=np.zeros((16, 16))), "frames: expected a \\(frames, height, width\\)"),
    (dict(pixel_nm=0), "pixel_nm"), (dict(pixel_nm=-100.0), "pixel_nm"),
    (dict(roi=6), "roi"), (dict(roi=3), "roi"), (dict(roi=True), "roi"),
    (dict(sigma_nm=-1.0), "sigma_nm"), (dict(threshold=0), "threshold"), (dict(batch_frames=0), "batch_frames"),
    (dict(camera="emccd"), "camera"), (dict(frames=np.zeros((2, 4, 4))), "roi"),
])
def test_bad_input_gives_one_line_errors(kwargs, match):
    args = dict(frames=np.zeros((2, 16, 16), np.float32), sigma_nm=110.0) | kwargs
    with pytest.raises(ValueError, match=match) as e: fit_frames(**args)
    assert "\n" not in str(e.value)


def test_nan_frames_are_named():
    frames = np.ones((3, 16, 16), np.float32)
    frames[2, 4, 4] = np.nan
    with pytest.raises(ValueError, match="frame 2") as e: fit_frames(frames, sigma_nm=110.0)
    assert "\n" not in str(e.value)


def test_mle_in_compare_models():
    table = compare_models(("mle",), SimulationConfig(height=32, width=32), densities=(0.5,), test_frames=3, device="cpu")
    assert_eq(table["model"].tolist(), ["MLE fit"])
    assert_eq(table["parameters"].tolist(), [0])
    assert table["precision_pct"].iloc[0] > 90
    table = compare_models({"fit": ClassicalFitter(sigma_nm=110.0)}, SimulationConfig(height=32, width=32), densities=(0.5,),
                           test_frames=3, device="cpu")
    assert_eq(table["model"].tolist(), ["fit"])


def test_blur_matches_a_replicate_padded_convolution():
    import torch
    import torch.nn.functional as F
    from dl4smlm.fit import _blur, _gaussian_1d
    x = torch.rand(3, 9, 70) * 100                                          # narrower than the wide kernel in one axis
    for sigma in (1.1, 2.75):
        g = _gaussian_1d(sigma, "cpu")
        k = len(g) // 2
        ref = F.conv2d(F.pad(x[:, None], (k, k, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
        ref = F.conv2d(F.pad(ref, (0, 0, k, k), mode="replicate"), g.view(1, 1, -1, 1))[:, 0]
        assert_close(_blur(x, sigma), ref, eps=1e-3)


def test_fit_frames_restores_the_torch_thread_count():
    import torch
    before = torch.get_num_threads()
    s = isolated_stack(frames=2, photons=3000, camera="ideal", seed=7)
    fit_frames(s.frames, s.camera, sigma_nm=110.0, device="cpu")
    assert_eq(torch.get_num_threads(), before)
