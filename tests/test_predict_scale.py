"""Prediction at the scale of real acquisitions: streamed to the folder, kill-safe and resumable, split across processes, lazy big TIFFs."""
import os, random, signal, subprocess, sys, time, uuid
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from fastcore.test import test_eq as assert_eq

from dl4smlm.cli import main
from dl4smlm.io import LazyTiffStack, read_stack, save_simulation
from dl4smlm.localize import plan_tiling, predict
from dl4smlm.predict import PREDICT_FILES, predict_to_folder
from dl4smlm.simulate import SimulationConfig, simulate
from dl4smlm.checkpoint import load_model

BIN = Path(sys.executable).parent
MODEL = "fid-storm-x4-emccd"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    "48 simulated frames of 32² px (simulation.json beside them: camera and pixel size)."
    d = tmp_path_factory.mktemp("stack")
    save_simulation(d, simulate(SimulationConfig(frames=48, height=32, width=32, density=2.0, seed=4)))
    return d / "frames.tif"


def _predict_cli(stack, out, *extra):
    return ["predict", MODEL, str(stack), "--out", str(out), "--device", "cpu", "--batch-size", "2", *map(str, extra)]


def test_sigkilled_run_resumed_gives_byte_identical_localizations(stack, tmp_path):
    seed = random.randrange(10**6)
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}          # the same arithmetic as this process
    proc = subprocess.Popen([str(BIN / "dl4smlm"), *_predict_cli(stack, cut)], env=env, stderr=subprocess.DEVNULL)
    state = tmp_path / ".cut.partial" / "part-0" / "state.npz"
    deadline = time.monotonic() + 120
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline: time.sleep(0.01)
    time.sleep(random.Random(seed).uniform(0, 0.2))                                # a random point after the first save
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed (seed {seed})"
    assert not cut.exists()                                                        # complete or absent
    done = int(np.load(state)["done"])
    same = dict(device="cpu", batch_size=2, progress=False, check=False, load=False)   # what the command does, less its data check
    predict_to_folder(MODEL, stack, cut, resume=True, **same)
    predict_to_folder(MODEL, stack, whole, **same)
    assert_eq(sorted(p.name for p in cut.iterdir()), sorted(PREDICT_FILES))
    assert not (tmp_path / ".cut.partial").exists()
    assert (cut / "localizations.csv").read_bytes() == (whole / "localizations.csv").read_bytes(), f"seed {seed}, resumed at frame {done}"
    assert_eq(tifffile.imread(cut / "super_resolution.tif"), tifffile.imread(whole / "super_resolution.tif"))


def test_resume_refuses_other_settings_and_a_fresh_run_cleans_leftovers(stack, tmp_path):
    out, work = tmp_path / "p", tmp_path / ".p.partial"
    work.mkdir(); (work / "junk.tmp").write_text("left by a killed run")
    pred = predict_to_folder(MODEL, stack, out, device="cpu", batch_size=64, progress=False, check=False, load=False)
    assert not work.exists() and pred.localizations is None and pred.n_localizations > 0
    assert_eq(sorted(p.name for p in out.iterdir()), sorted(PREDICT_FILES))
    (work / "part-0").mkdir(parents=True)                                          # a killed run with other settings
    from dl4smlm.predict import _Part
    _Part(work / "part-0", 0, {"threshold": 9.0}, resume=False).save()
    with pytest.raises(ValueError, match="other inputs or settings; run without --resume"):
        predict_to_folder(MODEL, stack, out, device="cpu", batch_size=64, progress=False, check=False, resume=True)


def test_out_that_is_a_file_is_refused_before_inference(stack, tmp_path, monkeypatch):
    import dl4smlm.predict as pr
    f = tmp_path / "taken"
    f.write_text("not a folder")
    monkeypatch.setattr(pr, "read_stack", lambda *a: pytest.fail("read the stack before checking --out"))
    with pytest.raises(FileExistsError, match="taken: is a file, expected a folder"): pr.predict_to_folder(MODEL, stack, f)
    assert_eq(f.read_text(), "not a folder")


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo")
def test_two_processes_write_the_same_output_as_one(stack, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", str(29500 + os.getpid() % 1000), "--no-python",
                          str(BIN / "dl4smlm"), *_predict_cli(stack, tmp_path / "two")], env=env, capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr[-2000:]
    assert_eq(two.stdout.count("wrote "), 1)                                        # one merged output, reported once
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try: predict_to_folder(MODEL, stack, tmp_path / "one", device="cpu", batch_size=2, progress=False, check=False)
    finally: torch.set_num_threads(threads)
    assert (tmp_path / "two" / "localizations.csv").read_bytes() == (tmp_path / "one" / "localizations.csv").read_bytes()
    a, b = (tifffile.imread(tmp_path / d / "super_resolution.tif") for d in ("two", "one"))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max())       # the sum is added in another order


def test_predict_uses_the_model_normalizer_and_refuses_bad_input(stack):
    model = load_model(MODEL)
    frames = read_stack(stack)[:8]
    own = predict(model, frames, pixel_nm=100.0, threshold=1.34, device="cpu", progress=False)
    given = predict(model, frames, model.normalizer, pixel_nm=100.0, threshold=1.34, device="cpu", progress=False)
    assert_eq(len(own.localizations), len(given.localizations))
    assert own.seconds["model"] > 0 and set(own.seconds) == {"read", "normalise", "model", "localize"}
    bad = np.array(frames, np.float32); bad[5, 3, 3] = np.nan
    with pytest.raises(ValueError, match="frame 5 .*NaN or infinite"): predict(model, bad, device="cpu", progress=False)
    for px in (0, -100.0, float("nan")):
        with pytest.raises(ValueError, match="pixel_nm: expected the camera pixel size"): predict(model, frames, pixel_nm=px, progress=False)


def test_tiling_plan_takes_whole_frames_when_they_fit():
    assert_eq(plan_tiling(64, 64, 4), (64, 32, 32))                # whole frames, 32 per pass
    assert_eq(plan_tiling(256, 256, 4)[:2], (256, 2))
    tile, batch, per_pass = plan_tiling(512, 512, 8)               # 4096² fine px: the fewest tiles that fit 2 M fine px
    assert tile * 8 <= 2**10.5 and batch == 1 and per_pass == 1
    assert_eq(plan_tiling(30, 40, 8, tile=24, overlap=8, batch_size=4), (24, 4, 1))


def test_bigtiff_and_a_multifile_ome_series_are_read_lazily(tmp_path):
    a = np.arange(6 * 16 * 16, dtype=np.uint16).reshape(6, 16, 16)
    tifffile.imwrite(tmp_path / "big.tif", a, bigtiff=True, photometric="minisblack")
    assert isinstance(read_stack(tmp_path / "big.tif"), np.memmap) and np.array_equal(read_stack(tmp_path / "big.tif"), a)
    tifffile.imwrite(tmp_path / "bigz.tif", a, bigtiff=True, photometric="minisblack", compression="zlib")
    s = read_stack(tmp_path / "bigz.tif")
    assert isinstance(s, LazyTiffStack) and np.array_equal(s[2:5], a[2:5])
    ids, names = [str(uuid.uuid4()) for _ in range(2)], ["ser_0.ome.tif", "ser_1.ome.tif"]
    data = "".join(f'<TiffData FirstT="{3 * i}" IFD="0" PlaneCount="3"><UUID FileName="{names[i]}">urn:uuid:{ids[i]}</UUID></TiffData>'
                   for i in range(2))
    for k in range(2):                                            # two files of 3 frames, each naming both in its OME-XML
        xml = (f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
               f'UUID="urn:uuid:{ids[k]}"><Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint16" SizeX="16" '
               f'SizeY="16" SizeC="1" SizeZ="1" SizeT="6"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>{data}</Pixels></Image></OME>')
        with tifffile.TiffWriter(tmp_path / names[k]) as w:
            for i in range(3): w.write(a[3 * k + i], photometric="minisblack", description=xml if i == 0 else None, metadata=None)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # no "reading from closed file": the other file stays open
        s = read_stack(tmp_path / names[0])
        assert isinstance(s, LazyTiffStack) and s.shape == (6, 16, 16)
        assert np.array_equal(s[4], a[4]) and np.array_equal(s[1:6], a[1:6])
    s.close()


def _rss_file_kb():
    "Resident memory of this process that maps files (Linux: RssFile in /proc/self/status)."
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("RssFile:"))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_memory_mapped_frames_are_released_once_read(tmp_path):
    "The pages of frames already localized leave the process (a long stack's memory stays flat), and the frames stay intact."
    from dl4smlm.localize import _release_read_frames
    x = (np.arange(96 * 256 * 256, dtype=np.uint32) % 60_000).astype(np.uint16).reshape(96, 256, 256)   # 12 MB
    tifffile.imwrite(tmp_path / "big.tif", x)
    frames = read_stack(tmp_path / "big.tif")
    assert isinstance(frames, np.memmap) and frames.mode == "r"
    before = _rss_file_kb()
    for a in range(0, 96, 8): np.asarray(frames[a:a + 8], np.float32).sum()               # read every frame
    read = _rss_file_kb()
    assert read - before > 10_000                                                           # the stack's pages are mapped in
    for a in range(0, 96, 8): _release_read_frames(frames, a, a + 8)
    assert _rss_file_kb() - before < 1_000                                                  # and out again
    assert np.array_equal(frames, x)                                                       # read back from the file on demand
    cow = np.memmap(tmp_path / "big.tif", np.uint16, mode="c", offset=frames.offset, shape=frames.shape)
    cow[:2] = 7                                                                             # a copy-on-write map: its changes
    _release_read_frames(cow, 0, 2)                                                         # live only in this process's pages,
    assert (cow[:2] == 7).all()                                                             # which must not be dropped
