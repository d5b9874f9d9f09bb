"""dl4smlm.camera's per-pixel sCMOS calibration (issue 21 item 2): Huang's noise model holds pixel by pixel, dark frames and flat
fields give the maps back, the three file forms (our JSON, storm-analysis' .npy, a 3-plane TIFF) read the same camera, a pickle
cannot run code, hot pixels are found in frames, and `dl4smlm camera` / `--camera-file` work from the command line."""
import json
import os

import numpy as np
import pytest
import tifffile
from fastcore.test import test_close as assert_close, test_eq as assert_eq

from dl4smlm.camera import (SCMOSMapCamera, as_camera, bad_pixels_from_frames, calibrate_scmos, make_camera, read_camera_file,
                            write_camera_file)
from dl4smlm.cli import main
from dl4smlm.fit import photon_noise_model


def chip(h=32, w=48, seed=0, noisy=0.01):
    rng = np.random.default_rng(seed)
    gain = 2.17 * (1 + rng.normal(0, 0.03, (h, w)))
    read = 1.6 * np.exp(rng.normal(0, 0.25, (h, w)))
    k = rng.random((h, w)) < noisy
    read[k] *= rng.uniform(3, 8, k.sum())
    return SCMOSMapCamera(100 + rng.normal(0, 2, (h, w)), (read * gain) ** 2, gain, qe=0.8)


def test_photons_and_noise_follow_the_maps_pixel_by_pixel():
    cam, rng = chip(), np.random.default_rng(1)
    p = cam.to_photons(cam.apply(np.full((3000, 32, 48), 25.0, np.float32), rng))
    kappa, delta = photon_noise_model(cam)
    assert_eq(delta.shape, (32, 48))
    assert abs(p.mean() - 25.0) < 0.05
    ratio = p.var(0) / ((25.0 + delta) / kappa)                             # Huang: (mean + var/g²/qe)/qe in every pixel
    assert abs(np.median(ratio) - 1) < 0.02 and np.percentile(np.abs(ratio - 1), 95) < 0.08


def test_dark_frames_and_flats_give_the_maps_back():
    cam, rng = chip(), np.random.default_rng(2)
    dark = cam.apply(np.zeros((600, 32, 48), np.float32), rng)
    flats = [cam.apply(np.full((300, 32, 48), v, np.float32), rng) for v in (20.0, 80.0, 200.0)]
    got = calibrate_scmos(dark, flats, qe=0.8)
    assert (np.abs(got.offset - cam.offset) < 5 * np.sqrt(cam.variance / 600)).all()            # within 5 sd of a 600-frame mean
    assert abs(np.median(got.gain / cam.gain) - 1) < 0.01
    assert abs(np.median(np.sqrt(got.variance / cam.variance)) - 1) < 0.02
    with pytest.raises(ValueError, match="e_per_adu"): calibrate_scmos(dark)
    assert_close(calibrate_scmos(dark, e_per_adu=0.5).e_per_adu, 0.5, eps=1e-5)


def test_every_file_form_reads_the_same_camera(tmp_path):
    cam = chip()
    o, v, g = (a.astype(np.float64) for a in (cam.offset, cam.variance, cam.gain))
    write_camera_file(tmp_path / "cam.json", cam, dark="dark.tif")
    np.save(tmp_path / "v2.npy", np.array([o, v, g, np.ones_like(o), 2], dtype=object), allow_pickle=True)
    np.save(tmp_path / "v1.npy", np.array([o, v, g, 1], dtype=object), allow_pickle=True)
    np.save(tmp_path / "v0.npy", np.stack([o.T, v.T, g.T]))                # storm-analysis' oldest form is transposed
    tifffile.imwrite(tmp_path / "maps.tif", np.stack([o, v, g]).astype(np.float32), photometric="minisblack")
    for name in ("cam.json", "v2.npy", "v1.npy", "v0.npy", "maps.tif"):
        assert read_camera_file(tmp_path / name, qe=0.8) == cam, name
    assert json.loads((tmp_path / "cam.json").read_text())["summary"]["shape"] == [32, 48]
    rqe = np.full_like(o, 0.5)                                              # a relative QE map is folded into the gain
    np.save(tmp_path / "rqe.npy", np.array([o, v, g, rqe, 2], dtype=object), allow_pickle=True)
    assert_close(read_camera_file(tmp_path / "rqe.npy").gain, cam.gain * 0.5, eps=1e-5)
    write_camera_file(tmp_path / "em.json", make_camera("emccd", em_gain=150.0))
    assert_eq(read_camera_file(tmp_path / "em.json"), make_camera("emccd", em_gain=150.0))
    assert_eq(as_camera(cam.to_dict()), cam)


@pytest.mark.parametrize("content, match", [
    ("pickle", "is not a numpy array"), ("four", "not a storm-analysis"), ("json", "expected a camera file"), ("ext", "unknown camera file type"),
    ("shape", "one \\(height, width\\) shape"), ("missing", "no such camera file")])
def test_bad_camera_files_give_one_line_errors(tmp_path, content, match):
    class Trap:
        def __reduce__(self): return (os.system, ("echo never",))
    path = tmp_path / {"pickle": "x.npy", "four": "y.npy", "json": "z.json", "ext": "c.txt", "shape": "s.tif", "missing": "m.json"}[content]
    if content == "pickle": np.save(path, np.array([Trap(), 1, 2], dtype=object), allow_pickle=True)
    if content == "four": np.save(path, np.zeros((4, 8, 8)))
    if content == "json": path.write_text('{"gain": 2}')
    if content == "ext": path.write_text("offset")
    if content == "shape":
        with pytest.raises(ValueError, match=match): SCMOSMapCamera(np.zeros((8, 8)), np.ones((8, 9)), np.ones((8, 8)))
        return
    with pytest.raises(ValueError, match=match) as e: read_camera_file(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_maps_refuse_frames_of_another_size_and_crop():
    cam = chip()
    with pytest.raises(ValueError, match="crop the calibration"): cam.to_photons(np.zeros((2, 16, 16)))
    part = cam.crop(4, 8, 16, 16)
    assert_eq(part.shape, (16, 16))
    assert np.array_equal(part.offset, cam.offset[4:20, 8:24])
    with pytest.raises(ValueError, match="do not lie in"): cam.crop(20, 0, 16, 16)


def test_bad_pixels_from_the_maps_and_from_the_frames():
    cam = chip()
    v = np.array(cam.variance); v[3, 4] = 0; v[5, 6] = 400 * np.median(v)       # a dead pixel and a very noisy one
    bad = SCMOSMapCamera(cam.offset, v, cam.gain, qe=0.8).bad_pixels
    assert bad[3, 4] and bad[5, 6]
    rng = np.random.default_rng(3)
    frames = rng.poisson(20.0, (30, 32, 48)).astype(np.float32)
    hot = [(5, 7), (20, 30), (11, 40)]
    for r, c in hot: frames[:, r, c] += 300
    yy, xx = np.mgrid[:32, :48]
    frames[:, 16, :] += 0                                                    # a molecule in every frame at one place is no hot pixel
    frames += (800 / (2 * np.pi * 1.2 ** 2) * np.exp(-((yy - 25.3) ** 2 + (xx - 10.6) ** 2) / (2 * 1.2 ** 2)))[None]
    found = bad_pixels_from_frames(frames)
    assert all(found[r, c] for r, c in hot)
    assert not found[23:28, 8:14].any()
    assert not bad_pixels_from_frames(frames[:4]).any()                      # too few frames to tell


def test_the_camera_command_and_camera_file_option(tmp_path, capsys):
    cam, rng = chip(), np.random.default_rng(4)
    tifffile.imwrite(tmp_path / "dark.tif", cam.apply(np.zeros((200, 32, 48), np.float32), rng))
    for v in (30, 120): tifffile.imwrite(tmp_path / f"flat{v}.tif", cam.apply(np.full((150, 32, 48), float(v), np.float32), rng))
    out = tmp_path / "camera.json"
    assert main(["camera", str(tmp_path / "dark.tif"), "--flat", str(tmp_path / "flat30.tif"), str(tmp_path / "flat120.tif"),
                 "--out", str(out)]) == 0
    got = read_camera_file(out)
    assert abs(got.e_per_adu / cam.e_per_adu - 1) < 0.01
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e: main(["camera", str(tmp_path / "dark.tif"), "--out", str(out)])   # exists
    assert e.value.code == 2
    from dl4smlm.simulate import SimulationConfig, expected_photons, simulate
    cfg = SimulationConfig(frames=10, height=32, width=48, density=0.5, camera="scmos", seed=5)
    tifffile.imwrite(tmp_path / "frames.tif", cam.apply(expected_photons(simulate(cfg).ground_truth, cfg), rng))
    assert main(["fit", str(tmp_path / "frames.tif"), "--out", str(tmp_path / "fit"), "--camera-file", str(out), "--pixel-nm", "100"]) == 0
    err = capsys.readouterr().err
    assert "fitted σ median" in err and "noise" in err
    with pytest.raises(SystemExit) as e:
        main(["fit", str(tmp_path / "frames.tif"), "--out", str(tmp_path / "fit2"), "--camera-file", str(out), "--e-per-adu", "2"])
    assert e.value.code == 2 and "gives these per pixel" in capsys.readouterr().err
