"""A catalogue of bad inputs: each row runs the `dl4smlm` command on one kind of bad input and checks that it stops with
exit status 2 (130 for Ctrl-C), one error line on stderr that names the input (no traceback), and that nothing was
written or lost in the folder it works in.

The kinds, by group:

- TIFF stacks: not a TIFF, empty file, truncated (half the data, only the header, the page chain cut), damaged
  compressed data, RGB, 4-D, a blank 2-D image, NaN pixels, infinite pixels, complex pixels, a missing file,
  a folder given as the stack.
- Localization tables: missing columns, a non-numeric value, header only, empty file, frames counted from 0,
  fractional frames, NaN positions, duplicate columns, binary garbage, an unknown format, Picasso without pixel
  size, a table whose localizations all lie outside the frames (training), a header-only table (training).
- Checkpoints: not a checkpoint, empty, truncated, tampered tensors, tampered settings (pixel size), a model this
  dl4smlm does not know, a pickle that would run code, an unknown bundled model, --resume of a checkpoint
  without training state, a checkpoint interrupted before its first epoch (predict).
- Options: zero, negative, not a number, out of range (--qe), a bad LOW:HIGH range (reversed, three parts), a
  range where only a number is allowed, conflicting options (DATA_DIR and --simulate; --out and --in-place
  missing), a bad --field-nm, an unknown choice, an unknown option, --resume with conflicting options.
- Files and folders: output that is an existing file, output that is a folder, an output folder whose parent is a
  file, an unwritable folder, a missing input, a folder given as a file, existing outputs without --overwrite
  (simulate, convert, estimate, predict).
- What a run can meet late: out of memory, disk full, divergence (FloatingPointError), a missing optional extra,
  Ctrl-C outside training, an unexpected error (a bug: exit 1, still one line).
- Signals (subprocesses): SIGINT during training leaves a resumable checkpoint and says how to resume; SIGKILL
  during predict leaves no half-written output.
- The hostile probe of issue 23, each finding with more cases of its class: --overwrite that replaces only the command's own
  files (export into the checkpoint's folder, and every other command); stacks with no molecules; defective stacks refused
  before compute (frames along another axis, saturation, negative, 8-bit, 0–1 or blank pixels) or warned about (hot
  rows, columns and pixels, a camera whose noise does not fit the stack); values in another unit; edited copies of bundled
  models; unknown bundled names; stacks the package wrote read back; a folder another run writes; and messages that said
  too little (bad camera_params, the fix for out of memory, Ctrl-C while starting, a closed pipe, a folder left behind).
"""
import errno, hashlib, json, os, signal, subprocess, sys, time, zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

import dl4smlm.cli as cli
from dl4smlm.cli import main
from dl4smlm.io import write_stack, read_stack

EXE = str(Path(sys.executable).parent/"dl4smlm")

def snapshot(folder):
    "{relative path: SHA-256 of the bytes (None for a folder)} of everything under `folder`."
    return {str(p.relative_to(folder)): None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*"))}

def refused(capsys, folder, argv, *names, status=2):
    "Run `dl4smlm argv` in-process; check the exit status, one error line naming each of `names`, and `folder` unchanged."
    before = snapshot(folder)
    with pytest.raises(SystemExit) as e: main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == status, err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    for n in names: assert str(n) in errors[0], (n, err)
    assert snapshot(folder) == before, "the folder changed"
    return errors[0]

@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    "A work folder: data/ (a tiny simulation) and model.pt (trained one tiny epoch)."
    d = tmp_path_factory.mktemp("bad")
    assert main(["simulate", str(d/"data"), "--frames", "4", "--size", "32", "--density", "3", "--seed", "1"]) == 0
    assert main(["train", str(d/"data"), "--model", "srcnn", "--upsampling", "2", "--epochs", "1", "--batch-size", "4",
                 "--patch-size", "16", "--device", "cpu", "--out", str(d/"model.pt")]) == 0
    return d

@pytest.fixture
def case(tmp_path, ws):
    "A fresh folder for one row, with a copy of the stack and the checkpoint."
    for name in ("frames.tif", "ground_truth.csv", "simulation.json"): (tmp_path/name).write_bytes((ws/"data"/name).read_bytes())
    (tmp_path/"model.pt").write_bytes((ws/"model.pt").read_bytes())
    return tmp_path

# ---- TIFF stacks: read by `fit` (the stack is read before anything is written)

def fit_args(case, stack): return ["fit", case/stack, "--out", case/"out", "--camera", "ideal", "--pixel-nm", "100"]

def _bytes_cut(case, n):
    data = (case/"frames.tif").read_bytes()
    return data[:n(len(data))]

TIFFS = {   # kind: (how to make bad.tif from the good stack, words the message must hold)
    "not a TIFF":            (lambda c: (c/"bad.tif").write_text("frame,x,y\n1,2,3\n"), "not a TIFF file"),
    "empty file":            (lambda c: (c/"bad.tif").write_bytes(b""), "empty file"),
    "truncated data":        (lambda c: (c/"bad.tif").write_bytes(_bytes_cut(c, lambda n: n // 2)), "truncated or damaged"),
    "truncated header":      (lambda c: (c/"bad.tif").write_bytes(_bytes_cut(c, lambda n: 4)), "truncated or damaged"),
    "truncated page chain":  (lambda c: tifffile.imwrite(c/"full.tif", np.ones((6, 16, 16), np.uint16), contiguous=False, metadata=None)
                              or (c/"bad.tif").write_bytes((c/"full.tif").read_bytes()[:1800]) or (c/"full.tif").unlink(), "truncated or damaged"),
    "damaged compression":   (lambda c: write_stack(c/"bad.tif", np.random.default_rng(0).integers(0, 999, (4, 16, 16)), compression="zlib")
                              or (c/"bad.tif").write_bytes((lambda b: b[:900] + bytes(200) + b[1100:])((c/"bad.tif").read_bytes())), "truncated or damaged"),
    "RGB":                   (lambda c: tifffile.imwrite(c/"bad.tif", np.zeros((16, 16, 3), np.uint8), photometric="rgb"), "RGB"),
    "4-D":                   (lambda c: tifffile.imwrite(c/"bad.tif", np.zeros((2, 3, 16, 16), np.uint16), photometric="minisblack"), "split channels"),
    "blank 2-D image":       (lambda c: tifffile.imwrite(c/"bad.tif", np.zeros((16, 16), np.uint16)), "blank"),   # read as one frame, then refused as blank
    "NaN pixels":            (lambda c: tifffile.imwrite(c/"bad.tif", np.full((3, 16, 16), np.nan, np.float32)), "NaN"),
    "infinite pixels":       (lambda c: tifffile.imwrite(c/"bad.tif", np.full((3, 16, 16), np.inf, np.float32)), "infinite"),
    "complex pixels":        (lambda c: tifffile.imwrite(c/"bad.tif", np.zeros((3, 16, 16), np.complex64)), "pixels"),
    "missing file":          (lambda c: None, "no such file"),
    "a folder":              (lambda c: (c/"bad.tif").mkdir(), "is a folder"),
}

@pytest.mark.parametrize("kind", TIFFS)
def test_bad_stack(capsys, case, kind):
    make, words = TIFFS[kind]
    make(case)
    refused(capsys, case, fit_args(case, "bad.tif"), case/"bad.tif", words)

# ---- Localization tables: read by `evaluate`, `convert` and `train`

GOOD = "frame,x [nm],y [nm]\n1,100,200\n2,300,400\n"
TABLES = {   # kind: (the CSV's text, words the message must hold)
    "missing columns":   ("frame,x [nm]\n1,100\n", "missing column"),
    "non-numeric value": ("frame,x [nm],y [nm]\n1,100,abc\n", "non-numeric"),
    "empty file":        ("", "empty file"),
    "frames from 0":     ("frame,x [nm],y [nm]\n0,100,200\n", "frame"),
    "fractional frames": ("frame,x [nm],y [nm]\n1.5,100,200\n", "frame"),
    "NaN position":      ("frame,x [nm],y [nm]\n1,nan,200\n", "non-finite"),
    "binary garbage":    (bytes(range(256)).decode("latin-1") * 4, "not a text table"),
}

@pytest.mark.parametrize("kind", TABLES)
def test_bad_table(capsys, case, kind):
    text, words = TABLES[kind]
    (case/"bad.csv").write_text(text, encoding="latin-1")
    refused(capsys, case, ["evaluate", case/"ground_truth.csv", case/"bad.csv"], case/"bad.csv", words)

def test_header_only_ground_truth(capsys, case):
    (case/"gt.csv").write_text("frame,x [nm],y [nm]\n")
    refused(capsys, case, ["evaluate", case/"gt.csv", case/"ground_truth.csv", "--field-nm", "3200,3200"], "gt.csv")

def test_unknown_table_format(capsys, case):
    (case/"good.csv").write_text(GOOD)
    refused(capsys, case, ["convert", case/"good.csv", case/"out.xyz"], "out.xyz", "extension")

def test_picasso_without_pixel_size(capsys, case):
    d = case/"picasso"; d.mkdir()   # no simulation.json beside it
    (d/"good.csv").write_text("frame,x [nm],y [nm],uncertainty [nm]\n1,100,200,10\n")
    assert main(["convert", str(d/"good.csv"), str(d/"locs.hdf5"), "--pixel-nm", "100"]) == 0
    (d/"locs.yaml").unlink()   # Picasso's pixel size lives in the .yaml beside the table
    refused(capsys, case, ["convert", d/"locs.hdf5", d/"back.csv"], "locs.hdf5", "pixel size")

def _train_folder(case, table):
    folder = case/"train"; folder.mkdir()
    (folder/"frames.tif").write_bytes((case/"frames.tif").read_bytes())
    (folder/"ground_truth.csv").write_text(table)
    return folder

TRAIN = ["--model", "srcnn", "--upsampling", "2", "--epochs", "1", "--batch-size", "4", "--patch-size", "16", "--device", "cpu"]

def test_train_on_localizations_outside_the_frames(capsys, case):
    folder = _train_folder(case, "frame,x [nm],y [nm]\n1,90000,90000\n2,-500,100\n")
    refused(capsys, case, ["train", folder, *TRAIN, "--out", case/"m.pt"], "ground_truth.csv", "none of")

def test_train_on_a_header_only_table(capsys, case):
    folder = _train_folder(case, "frame,x [nm],y [nm]\n")
    refused(capsys, case, ["train", folder, *TRAIN, "--out", case/"m.pt"], "ground_truth.csv")

# ---- Checkpoints: read by `predict` (before any output is written)

def _resave(case, change):
    ck = torch.load(case/"model.pt", weights_only=True)
    change(ck)
    torch.save(ck, case/"bad.pt")

class _Evil:
    def __reduce__(self): return (print, ("this would run code",))

CHECKPOINTS = {   # kind: (how to make bad.pt, words the message must hold)
    "not a checkpoint":  (lambda c: (c/"bad.pt").write_text("weights"), "not a PyTorch checkpoint"),
    "empty":             (lambda c: (c/"bad.pt").write_bytes(b""), "empty file"),
    "truncated":         (lambda c: (c/"bad.pt").write_bytes((c/"model.pt").read_bytes()[:5000]), "truncated"),
    "tampered tensors":  (lambda c: _resave(c, lambda ck: next(iter(ck["state_dict"].values())).add_(0.01)), "SHA-256"),
    "tampered pixel size": (lambda c: _resave(c, lambda ck: ck.update(pixel_nm=ck.get("pixel_nm", 100) * 2)), "SHA-256"),
    "model name edited": (lambda c: _resave(c, lambda ck: ck["model"].update(name="resnet-9000")), "refused"),
    "code in a pickle":  (lambda c: torch.save({"format": "dl4smlm-checkpoint", "evil": _Evil()}, c/"bad.pt"), "refused"),
    "a plain state dict": (lambda c: torch.save({"weight": torch.zeros(3)}, c/"bad.pt"), "not a dl4smlm checkpoint"),
}

@pytest.mark.parametrize("kind", CHECKPOINTS)
def test_bad_checkpoint(capsys, case, kind):
    make, words = CHECKPOINTS[kind]
    make(case)
    refused(capsys, case, ["predict", case/"bad.pt", case/"frames.tif", "--out", case/"out", "--device", "cpu"], case/"bad.pt", words)

def test_unknown_bundled_model(capsys, case):
    refused(capsys, case, ["predict", "no-such-model-x8", case/"frames.tif", "--out", case/"out"], "no-such-model-x8")

def test_resume_without_training_state(capsys, case):
    _resave(case, lambda ck: ck.update(training=None))
    refused(capsys, case, ["train", case, *TRAIN, "--resume", case/"bad.pt"], "bad.pt")

def test_checkpoint_interrupted_before_its_first_epoch(capsys, case, monkeypatch):
    from dl4smlm.train import Trainer
    with monkeypatch.context() as m:   # Ctrl-C at the first step: a resumable checkpoint that finished no epoch
        m.setattr(Trainer, "_stop_requested", lambda self: True)
        assert main(["train", str(case), *TRAIN, "--out", str(case/"bad.pt")]) == 130
    capsys.readouterr()
    refused(capsys, case, ["predict", case/"bad.pt", case/"frames.tif", "--out", case/"out", "--device", "cpu"], "bad.pt", "epoch")

# ---- Options

OPTIONS = {   # kind: (argv after the command, words the message must hold)
    "zero frames":            (["simulate", "{d}/x", "--frames", "0"], "--frames"),
    "negative density":       (["simulate", "{d}/x", "--density", "-1"], "--density"),
    "not a number":           (["simulate", "{d}/x", "--photons", "many"], "--photons"),
    "quantum efficiency > 1": (["simulate", "{d}/x", "--qe", "2"], "--qe"),
    "reversed range":         (["train", "--simulate", "--density", "6:0.1", "--out", "{d}/m.pt"], "--density"),
    "three-part range":       (["train", "--simulate", "--photons", "1:2:3", "--out", "{d}/m.pt"], "--photons"),
    "range without --simulate": (["train", "{d}", "--density", "0.1:6", "--out", "{d}/m.pt"], "--density"),
    "DATA_DIR and --simulate": (["train", "{d}", "--simulate", "--out", "{d}/m.pt"], "--simulate"),
    "neither DATA_DIR nor --simulate": (["train", "--out", "{d}/m.pt"], "--simulate"),
    "zero batch size":        (["train", "--simulate", "--batch-size", "0", "--out", "{d}/m.pt"], "--batch-size"),
    "unknown model":          (["train", "--simulate", "--model", "resnet", "--out", "{d}/m.pt"], "--model"),
    "negative threshold":     (["predict", "{d}/model.pt", "{d}/frames.tif", "--out", "{d}/o", "--threshold", "-1"], "--threshold"),
    "bad --field-nm":         (["evaluate", "{d}/ground_truth.csv", "{d}/ground_truth.csv", "--field-nm", "3200"], "--field-nm"),
    "calibrate without --out": (["calibrate", "{d}/model.pt", "{d}"], "--out"),
    "unknown option":         (["simulate", "{d}/x", "--colour", "red"], "--colour"),
    "fit ROI of 0 px":        (["fit", "{d}/frames.tif", "--out", "{d}/o", "--roi", "0"], "--roi"),
}

@pytest.mark.parametrize("kind", OPTIONS)
def test_bad_option(capsys, case, kind):
    argv, words = OPTIONS[kind]
    refused(capsys, case, [a.format(d=case) for a in argv], words)

def test_resume_with_conflicting_options(capsys, case):
    refused(capsys, case, ["train", case, "--resume", case/"model.pt", "--lr", "0.5", "--device", "cpu"], "--lr")

# ---- Files and folders

def test_simulate_into_a_file(capsys, case):
    (case/"taken").write_text("notes")
    refused(capsys, case, ["simulate", case/"taken", "--frames", "2", "--size", "16"], "taken")

def test_output_folder_under_a_file(capsys, case):
    (case/"taken").write_text("notes")
    refused(capsys, case, ["simulate", case/"taken"/"sim", "--frames", "2", "--size", "16"], "taken")

def test_predict_out_is_a_file(capsys, case):
    (case/"taken").write_text("notes")
    refused(capsys, case, ["predict", case/"model.pt", case/"frames.tif", "--out", case/"taken", "--device", "cpu"], "taken")

def test_train_out_is_a_folder(capsys, case):
    (case/"m.pt").mkdir()
    refused(capsys, case, ["train", case, *TRAIN, "--out", case/"m.pt"], "m.pt")

def test_estimate_out_is_a_folder(capsys, case):
    (case/"sim.json").mkdir()
    refused(capsys, case, ["estimate", case/"frames.tif", "--out", case/"sim.json", "--camera", "ideal", "--pixel-nm", "100"], "sim.json")

def test_unwritable_folder(capsys, case, monkeypatch):
    locked = case/"locked"; locked.mkdir(); locked.chmod(0o555)
    if os.geteuid() == 0:   # root writes anywhere: make the system refuse as it would refuse a user
        real = Path.mkdir
        def deny(self, *a, **k):
            if str(self).startswith(str(locked)): raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, *a, **k)
        monkeypatch.setattr(Path, "mkdir", deny)
    try: refused(capsys, case, ["simulate", locked/"sim", "--frames", "2", "--size", "16"], "locked", "Permission denied")
    finally: locked.chmod(0o755)

def test_missing_data_folder(capsys, case):
    refused(capsys, case, ["train", case/"nothing-here", *TRAIN, "--out", case/"m.pt"], "nothing-here")

def test_data_folder_is_a_file(capsys, case):
    refused(capsys, case, ["train", case/"frames.tif", *TRAIN, "--out", case/"m.pt"], "frames.tif")

def test_missing_checkpoint(capsys, case):
    refused(capsys, case, ["predict", case/"gone.pt", case/"frames.tif", "--out", case/"out"], "gone.pt")

EXISTING = {   # kind: (argv, the file already there)
    "simulate": (["simulate", "{d}", "--frames", "2", "--size", "16"], "frames.tif"),
    "convert":  (["convert", "{d}/ground_truth.csv", "{d}/copy.csv"], "copy.csv"),
    "estimate": (["estimate", "{d}/frames.tif", "--out", "{d}/simulation.json", "--camera", "ideal"], "simulation.json"),
    "train":    (["train", "{d}", "--epochs", "1", "--out", "{d}/model.pt"], "model.pt"),
    "calibrate": (["calibrate", "{d}/model.pt", "{d}", "--out", "{d}/model.pt"], "model.pt"),
}

@pytest.mark.parametrize("kind", EXISTING)
def test_existing_output_without_overwrite(capsys, case, kind):
    argv, name = EXISTING[kind]
    (case/"copy.csv").write_text(GOOD)
    refused(capsys, case, [a.format(d=case) for a in argv], name, "--overwrite")

def test_predict_existing_outputs_without_overwrite(capsys, case):
    (case/"out").mkdir(); (case/"out"/"localizations.csv").write_text(GOOD)
    refused(capsys, case, ["predict", case/"model.pt", case/"frames.tif", "--out", case/"out", "--device", "cpu"], "localizations.csv", "--overwrite")

# ---- What a run meets late: the one map of exceptions to messages

LATE = {   # kind: (the exception the command meets, exit status, words the message must hold)
    "out of memory":      (MemoryError(), 2, "--frames"),
    "CUDA out of memory": (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 2, "--size"),
    "disk full":          (OSError(errno.ENOSPC, "No space left on device", "x/frames.tif"), 2, "x/frames.tif"),
    "divergence":         (FloatingPointError("overflow encountered in multiply"), 2, "--lr"),
    "missing extra":      (ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime"), 2, "dl4smlm[export]"),
    "TIFF library error": (tifffile.TiffFileError("x.tif: invalid page offset"), 2, "x.tif"),
    "Ctrl-C":             (KeyboardInterrupt(), 130, "interrupted"),
    "a bug":              (TypeError("unsupported operand"), 1, "--debug"),
}

@pytest.mark.parametrize("kind", LATE)
def test_late_failure(capsys, case, monkeypatch, kind):
    exc, status, words = LATE[kind]
    def fail(*a, **k): raise exc
    monkeypatch.setattr(cli, "simulate_to_folder", fail)
    refused(capsys, case, ["simulate", case/"x", "--frames", "2", "--size", "16"], words, status=status)

def test_debug_shows_the_traceback(case, monkeypatch):
    def fail(*a, **k): raise MemoryError()
    monkeypatch.setattr(cli, "simulate_to_folder", fail)
    with pytest.raises(MemoryError): main(["--debug", "simulate", str(case/"x")])
    with pytest.raises(MemoryError): main(["simulate", str(case/"x"), "--debug"])

# ---- Signals: real processes

def _wait_for(proc, path, timeout=120):
    t0 = time.time()
    while not Path(path).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)

def test_sigint_during_training_leaves_a_resumable_checkpoint(case):
    from dl4smlm.checkpoint import load_checkpoint
    proc = subprocess.Popen([EXE, "train", "--simulate", "--size", "32", "--model", "srcnn", "--upsampling", "2", "--epochs", "50",
                             "--samples-per-epoch", "16", "--batch-size", "8", "--patch-size", "16", "--device", "cpu",
                             "--out", str(case/"run.pt")], stderr=subprocess.PIPE, text=True, cwd=case)
    _wait_for(proc, case/"run.pt")   # the first epoch is saved: interrupt the second
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"--resume {case/'run.pt'}" in err, err
    ck = load_checkpoint(case/"run.pt")
    assert ck["training"] is not None
    epochs = len(ck["history"]["epoch"])
    # resume continues that run, into that checkpoint: nothing else is written, the run keeps its 50 epochs
    before = set(os.listdir(case))   # resuming it with a conflicting option is refused, and nothing is written
    r = subprocess.run([EXE, "train", "--simulate", "--resume", str(case/"run.pt"), "--epochs", "3", "--device", "cpu"],
                       capture_output=True, text=True, cwd=case, timeout=120)
    assert r.returncode == 2 and "--epochs" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert set(os.listdir(case)) == before and len(load_checkpoint(case/"run.pt")["history"]["epoch"]) == epochs

def test_sigkill_during_predict_leaves_no_half_output(case):
    big = case/"big.tif"
    write_stack(big, np.random.default_rng(0).integers(90, 200, (400, 64, 64)).astype(np.uint16), pixel_nm=100)
    proc = subprocess.Popen([EXE, "predict", str(case/"model.pt"), str(big), "--out", str(case/"pred"), "--device", "cpu"],
                            stderr=subprocess.PIPE, cwd=case)
    time.sleep(3)
    proc.kill(); proc.communicate()
    pred = case/"pred"
    assert not pred.exists() or sorted(p.name for p in pred.iterdir()) == ["localizations.csv", "super_resolution.png", "super_resolution.tif"], \
        sorted(p.name for p in pred.iterdir())
    leftovers = [p.name for p in case.rglob("*") if "tmp" in p.name.lower()]
    assert not leftovers, leftovers

# ==== The hostile probe (issue 23): each finding fixed, and more cases of its class than the one reported

import dl4smlm.demo as demo_module
from dl4smlm.camera import make_camera
from dl4smlm.checkpoint import BUNDLED_DIGESTS, CheckpointError, bundled_digests, bundled_path, load_checkpoint, save_checkpoint
from dl4smlm.files import FolderBusy, lock_file, writing_folder
from dl4smlm.io import find_stack_defects
from dl4smlm.predict import PREDICT_FILES, predict_checkpoint, predict_to_folder
from dl4smlm.simulate import PLAUSIBLE, SimulationConfig, check_plausible
from dl4smlm.tables import read_localizations

def run_ok(capsys, argv):
    "Run `dl4smlm argv` in-process; check exit status 0 and no traceback; return its stderr's warning lines."
    status = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert status == 0 and "Traceback" not in err, err
    return [line for line in err.splitlines() if ": warning: " in line]

def warned(capsys, argv, *words):
    "Run `dl4smlm argv`: it succeeds with a warning line that holds each of `words`."
    lines = run_ok(capsys, argv)
    assert any(all(w in line for w in words) for line in lines), (words, lines)

@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    "Stacks the stack check can judge: 32 frames of 48 × 48 px (EMCCD, sCMOS; simulation.json beside each), and an empty one."
    d = tmp_path_factory.mktemp("probe")
    for name, extra in (("emccd", []), ("scmos", ["--camera", "scmos"])):
        assert main(["simulate", str(d / name), "--frames", "32", "--size", "48", "--density", "1", "--seed", "3", *extra]) == 0
    assert main(["simulate", str(d / "empty"), "--frames", "8", "--size", "32", "--density", "0", "--seed", "5"]) == 0
    return d

def _clean(probe): return np.asarray(read_stack(probe / "emccd" / "frames.tif"))

# ---- --overwrite replaces only the files of the command: never the input, never anything else

def test_export_into_the_checkpoints_folder_keeps_it(capsys, case):
    work = case / "work"; work.mkdir()
    (work / "m.pt").write_bytes((case / "model.pt").read_bytes()); (work / "notes.txt").write_text("mine")
    keep = snapshot(work)
    run_ok(capsys, ["export", work / "m.pt", "--out", work, "--format", "torchscript", "--overwrite"])   # the reported case
    assert {k: v for k, v in snapshot(work).items() if k in keep} == keep       # the checkpoint and the notes: untouched
    assert {"model.torchscript.pt", "dl4smlm.json"} <= set(snapshot(work))

def test_export_overwrite_replaces_only_export_files(capsys, case):
    out = case / "exp"
    run_ok(capsys, ["export", case / "model.pt", "--out", out, "--format", "torchscript"])
    (out / "mine.txt").write_text("mine")
    refused(capsys, case, ["export", case / "model.pt", "--out", out, "--format", "torchscript"], "dl4smlm.json", "--overwrite")
    run_ok(capsys, ["export", case / "model.pt", "--out", out, "--format", "onnx", "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["dl4smlm.json", "mine.txt", "model.onnx"]   # the stale TorchScript file went with its export

OVERWRITE = {   # command: (argv, run with and without --overwrite into folder {o}; {d} holds the inputs)
    "simulate": ["simulate", "{o}", "--frames", "2", "--size", "16"],
    "predict":  ["predict", "{d}/model.pt", "{d}/frames.tif", "--out", "{o}", "--device", "cpu"],
    "fit":      ["fit", "{d}/frames.tif", "--out", "{o}", "--camera", "ideal", "--pixel-nm", "100", "--sigma-nm", "110"],
    "convert":  ["convert", "{d}/ground_truth.csv", "{o}/copy.csv"],
    "train":    ["train", "{d}", *TRAIN, "--out", "{o}/m.pt"],
    "calibrate": ["calibrate", "{d}/model.pt", "{d}", "--out", "{o}/c.pt", "--device", "cpu"],
}

@pytest.mark.parametrize("command", OVERWRITE)
def test_overwrite_keeps_other_files(capsys, case, command):
    out = case / "o"; out.mkdir()
    (out / "mine.txt").write_text("mine"); (out / "sub").mkdir(); (out / "sub" / "data.csv").write_text("1,2\n")
    argv = [a.format(d=case, o=out) for a in OVERWRITE[command]]
    run_ok(capsys, argv)
    first, inputs = snapshot(out), snapshot(case)
    run_ok(capsys, argv + ["--overwrite"])
    after = snapshot(out)
    assert after["mine.txt"] == first["mine.txt"] and after["sub/data.csv"] == first["sub/data.csv"], sorted(after)
    assert set(first) == set(after), (set(first) ^ set(after))                  # the same files: none removed, none left behind
    assert {k: v for k, v in snapshot(case).items() if not k.startswith("o")} == {k: v for k, v in inputs.items() if not k.startswith("o")}

def test_demo_overwrite_keeps_other_files(capsys, case, monkeypatch):
    def report(final, out, *a):   # the report's files, moved into place as the demo does (no training here)
        for n in demo_module._DEMO_FILES: (out / n).write_text("new")
        demo_module.move_into_place(out, final, demo_module._DEMO_FILES)
    monkeypatch.setattr(demo_module, "_run_demo", report)
    out = case / "report"; out.mkdir(); (out / "mine.txt").write_text("mine"); (out / "metrics.json").write_text("old")
    refused(capsys, case, ["demo", "--out", out], "metrics.json", "--overwrite")
    run_ok(capsys, ["demo", "--out", out, "--overwrite"])
    assert (out / "mine.txt").read_text() == "mine" and (out / "metrics.json").read_text() == "new"
    assert not (case / ".report.partial").exists() and not lock_file(out).exists()

# ---- a stack with no molecules: an empty, valid table, or a clear refusal

def test_fit_on_an_empty_stack_writes_an_empty_table(capsys, probe, tmp_path):
    run_ok(capsys, ["fit", probe / "empty" / "frames.tif", "--out", tmp_path / "fit"])           # was: PyTorch's "Please clone()"
    assert len(read_localizations(tmp_path / "fit" / "localizations.csv")) == 0 and (tmp_path / "fit" / "super_resolution.png").is_file()

def test_predict_on_an_empty_stack_writes_an_empty_table(capsys, probe, tmp_path):
    run_ok(capsys, ["predict", "fid-storm-x4-emccd", probe / "empty" / "frames.tif", "--out", tmp_path / "p", "--device", "cpu"])
    assert len(read_localizations(tmp_path / "p" / "localizations.csv")) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(PREDICT_FILES)

def test_estimate_on_an_empty_stack_says_so(capsys, probe, case):
    refused(capsys, case, ["estimate", probe / "empty" / "frames.tif", "--out", case / "e.json"], "empty/frames.tif", "no molecule")

# ---- the stack check, before any compute: refusals (exit 2, nothing written) ...

def _write_tif(path, a):
    if a.dtype == np.uint8 or a.dtype == np.int16: tifffile.imwrite(path, a, photometric="minisblack")   # types write_stack converts
    else: write_stack(path, a, pixel_nm=100)

DEFECTS = {   # kind: (the clean stack made defective, words the refusal must hold)
    "(height, width, frames)": (lambda a: np.ascontiguousarray(np.moveaxis(a, 0, -1)), "(height, width, frames)"),
    "(height, frames, width)": (lambda a: np.ascontiguousarray(np.moveaxis(a, 0, 1)), "axis 1"),
    "saturated at 65,535": (lambda a: np.minimum(a.astype(np.int64) * 40, 65535).astype(np.uint16), "saturated"),
    "12-bit plateau at 4,095": (lambda a: np.minimum(a.astype(np.int64) * 8, 4095).astype(np.uint16), "plateau"),
    "background subtracted (float32)": (lambda a: a.astype(np.float32) - np.median(a), "negative"),
    "negative int16": (lambda a: (a.astype(np.int32) - 300).astype(np.int16), "negative"),
    "uint8": (lambda a: (a / a.max() * 255).astype(np.uint8), "uint8"),
    "scaled to 0–1": (lambda a: (a / a.max()).astype(np.float32), "0–1"),
    "blank (constant)": (lambda a: np.full_like(a, 100), "blank"),
    "blank (all zero)": (lambda a: np.zeros_like(a), "blank"),
}
READERS = {   # command reading a stack: its argv
    "predict": ["predict", "fid-storm-x4-emccd", "{s}", "--out", "{d}/out", "--device", "cpu", "--pixel-nm", "100"],
    "fit": ["fit", "{s}", "--out", "{d}/out", "--camera", "ideal", "--pixel-nm", "100"],
    "estimate": ["estimate", "{s}", "--out", "{d}/e.json", "--camera", "ideal", "--pixel-nm", "100"],
}

@pytest.mark.parametrize("command", READERS)
@pytest.mark.parametrize("kind", DEFECTS)
def test_defective_stack_refused_before_compute(capsys, probe, case, kind, command):
    make, words = DEFECTS[kind]
    _write_tif(case / "bad.tif", make(_clean(probe)))
    refused(capsys, case, [a.format(s=case / "bad.tif", d=case) for a in READERS[command]], "bad.tif", words, "--force-stack")

def test_calibrate_refuses_a_defective_stack(capsys, probe, case):
    data = case / "annotated"; data.mkdir()
    write_stack(data / "frames.tif", np.ascontiguousarray(np.moveaxis(_clean(probe), 0, -1)), pixel_nm=100)
    (data / "ground_truth.csv").write_text(GOOD)
    refused(capsys, case, ["calibrate", case / "model.pt", data, "--out", case / "c.pt", "--device", "cpu"], "frames.tif", "(height, width, frames)")

def test_force_stack_goes_on_with_a_warning(capsys, probe, case):
    _write_tif(case / "bad.tif", DEFECTS["background subtracted (float32)"][0](_clean(probe)))
    warned(capsys, ["fit", case / "bad.tif", "--out", case / "out", "--camera", "ideal", "--pixel-nm", "100", "--sigma-nm", "110",
                    "--force-stack"], "negative", "forced")

# ---- ... and warnings that name the defect (the run goes on)

def _hot(a, rows=(), cols=(), pixels=(), add=3000):
    a = a.astype(np.int64)
    for r in rows: a[:, r, :] += add
    for c in cols: a[:, :, c] += add
    for r, c in pixels: a[:, r, c] += add
    return a.astype(np.uint16)

WARNINGS = {   # kind: (the clean stack made defective, words the warning must hold)
    "a hot column": (lambda a: _hot(a, cols=[20]), ("hot line", "column 20")),
    "a hot row": (lambda a: _hot(a, rows=[30]), ("hot line", "row 30")),
    "hot pixels": (lambda a: _hot(a, pixels=[(10, 10), (30, 40)]), ("hot pixel", "(10, 10)")),
    "a few saturated pixels": (lambda a: np.where(np.arange(a.size).reshape(a.shape) % 9973 == 0, 65535, a).astype(np.uint16), ("65535", "saturated")),
}

@pytest.mark.parametrize("kind", WARNINGS)
def test_stack_defect_warned(capsys, probe, case, kind):
    make, words = WARNINGS[kind]
    write_stack(case / "bad.tif", make(_clean(probe)), pixel_nm=100)
    warned(capsys, ["fit", case / "bad.tif", "--out", case / "out", "--camera", "ideal", "--pixel-nm", "100", "--sigma-nm", "110"], *words)

def test_clean_stacks_have_no_defect(probe):
    for name in ("emccd", "scmos"):
        frames = read_stack(probe / name / "frames.tif")
        assert find_stack_defects(frames, name, make_camera(name)) == []

def test_an_scmos_stack_read_with_the_emccd_models_camera(capsys, probe, case):
    (case / "scmos.tif").write_bytes((probe / "scmos" / "frames.tif").read_bytes())   # no simulation.json: the model's camera is used
    warned(capsys, ["predict", "fid-storm-x4-emccd", case / "scmos.tif", "--out", case / "p", "--device", "cpu"], "scmos.tif", "sCMOS")

def test_an_emccd_stack_read_as_scmos(capsys, probe, case):
    (case / "emccd.tif").write_bytes((probe / "emccd" / "frames.tif").read_bytes())
    warned(capsys, ["fit", case / "emccd.tif", "--out", case / "f", "--camera", "scmos", "--e-per-adu", "0.46", "--baseline", "100",
                    "--sigma-nm", "110", "--pixel-nm", "100"], "emccd.tif", "EMCCD")

def test_a_baseline_above_the_background(capsys, probe, case):
    (case / "emccd.tif").write_bytes((probe / "emccd" / "frames.tif").read_bytes())
    warned(capsys, ["fit", case / "emccd.tif", "--out", case / "f", "--camera", "emccd", "--em-gain", "300", "--e-per-adu", "45",
                    "--baseline", "1000", "--sigma-nm", "110", "--pixel-nm", "100"], "baseline (1000 ADU)")

# ---- options with a unit refuse values that only make sense in another unit

UNITS = {   # case: (argv, words the refusal must hold)
    "simulate --pixel-nm 0.1 (µm)": (["simulate", "{d}/x", "--pixel-nm", "0.1"], ["--pixel-nm", "0.1 µm = 100 nm"]),
    "fit --pixel-nm 0.1 (µm)": (["fit", "{d}/frames.tif", "--out", "{d}/o", "--pixel-nm", "0.1"], ["--pixel-nm", "20 to 1,000 nm"]),
    "simulate --pixel-nm 1e-9 (m)": (["simulate", "{d}/x", "--pixel-nm", "1e-9"], ["--pixel-nm", "20 to 1,000 nm"]),
    "simulate --photons 1e30": (["simulate", "{d}/x", "--photons", "1e30"], ["--photons", "10,000,000"]),
    "evaluate --field-nm 24,24 (µm)": (["evaluate", "{d}/ground_truth.csv", "{d}/ground_truth.csv", "--field-nm", "24,24"], ["--field-nm", "24 µm"]),
    "predict --pixel-nm 6500 (the chip's)": (["predict", "{d}/model.pt", "{d}/frames.tif", "--out", "{d}/o", "--pixel-nm", "6500"], ["--pixel-nm", "magnification"]),
    "fit --sigma-nm 0.11 (µm)": (["fit", "{d}/frames.tif", "--out", "{d}/o", "--sigma-nm", "0.11"], ["--sigma-nm", "110 nm"]),
    "simulate --sigma-nm 110000 (pm)": (["simulate", "{d}/x", "--sigma-nm", "110000"], ["--sigma-nm", "pm"]),
    "train --density 0.1:1e6": (["train", "--simulate", "--density", "0.1:1e6", "--out", "{d}/m.pt"], ["--density", "emitters/µm²"]),
    "evaluate --tolerance-nm 0.25 (µm)": (["evaluate", "{d}/ground_truth.csv", "{d}/ground_truth.csv", "--tolerance-nm", "0.25"], ["--tolerance-nm", "250 nm"]),
    "estimate --pixel-nm 0.16 (µm)": (["estimate", "{d}/frames.tif", "--out", "{d}/e.json", "--pixel-nm", "0.16"], ["--pixel-nm", "160 nm"]),
    "convert --pixel-nm 0.1 (µm)": (["convert", "{d}/ground_truth.csv", "{d}/locs.hdf5", "--pixel-nm", "0.1"], ["--pixel-nm"]),
    "calibrate --pixel-nm 0.1 (µm)": (["calibrate", "{d}/model.pt", "{d}", "--out", "{d}/c.pt", "--pixel-nm", "0.1"], ["--pixel-nm"]),
    "fit --em-gain 1e9": (["fit", "{d}/frames.tif", "--out", "{d}/o", "--camera", "emccd", "--em-gain", "1e9"], ["--em-gain", "10,000"]),
    "simulate --background 1e12": (["simulate", "{d}/x", "--background", "1e12"], ["--background", "photons/px"]),
    "fit --read-noise 1e6": (["fit", "{d}/frames.tif", "--out", "{d}/o", "--camera", "scmos", "--read-noise", "1e6"], ["--read-noise", "e⁻"]),
    "predict --baseline 1e6": (["predict", "{d}/model.pt", "{d}/frames.tif", "--out", "{d}/o", "--baseline", "1e6"], ["--baseline", "65,535"]),
    "simulate too big for memory": (["simulate", "{d}/x", "--frames", "1000000000", "--size", "512"], ["memory", "--frames"]),
}

@pytest.mark.parametrize("kind", UNITS)
def test_value_in_another_unit_refused(capsys, case, kind):
    argv, words = UNITS[kind]
    refused(capsys, case, [a.format(d=case) for a in argv], *words)

def test_python_functions_refuse_other_units(case):
    with pytest.raises(ValueError, match="given in µm"): SimulationConfig(pixel_nm=0.1)
    with pytest.raises(ValueError, match="SimulationConfig.photons: expected"): SimulationConfig(photons=1e30)
    with pytest.raises(ValueError, match="pixel_nm: expected a camera pixel"): predict_checkpoint(case / "model.pt", np.zeros((2, 16, 16)), pixel_nm=0.1)
    from dl4smlm.fit import fit_frames
    with pytest.raises(ValueError, match="pixel_nm: expected a camera pixel"): fit_frames(np.zeros((2, 16, 16)), pixel_nm=1e-9)
    for name, (low, high, *_ ) in PLAUSIBLE.items():                     # every range: its ends pass, beyond them is refused
        assert check_plausible(name, low) == low and check_plausible(name, high) == high
        with pytest.raises(ValueError, match=name): check_plausible(name, high * 1.01 + 1)

# ---- the bundled models are pinned; a checkpoint's digest catches accidents, not forgery

def _bundled_copy(case, change, with_digest=False):
    ck = load_checkpoint("fid-storm-x4-emccd")
    change(ck)
    if with_digest: save_checkpoint(case / "copy.pt", ck)
    else: torch.save(ck, case / "copy.pt")

BUNDLED_EDITS = {   # kind: (the edit, written with recomputed digests?, words the refusal must hold)
    "pixel size edited": (lambda ck: ck.update(pixel_nm=65.0), False, "edited copy"),
    "threshold edited": (lambda ck: ck["calibration"].update(threshold=0.1), False, "edited copy"),
    "pixel size edited, digests recomputed": (lambda ck: ck.update(pixel_nm=65.0), True, "other settings"),
    "camera edited, digests recomputed": (lambda ck: ck["normalizer"]["camera"].update(em_gain=100.0), True, "other settings"),
}

@pytest.mark.parametrize("kind", BUNDLED_EDITS)
def test_edited_copy_of_a_bundled_model_refused(capsys, case, kind):
    change, digest, words = BUNDLED_EDITS[kind]
    _bundled_copy(case, change, digest)
    refused(capsys, case, ["predict", case / "copy.pt", case / "frames.tif", "--out", case / "out", "--device", "cpu"], "copy.pt", words)

def test_what_the_digest_does_not_protect_against(capsys, case):
    "A recalibrated copy (settings digest recomputed, as `dl4smlm calibrate` writes) loads: the digests catch accidents, not forgery — said in --help."
    _bundled_copy(case, lambda ck: ck["calibration"].update(threshold=0.1), with_digest=True)
    assert load_checkpoint(case / "copy.pt")["calibration"]["threshold"] == 0.1
    with pytest.raises(SystemExit): main(["predict", "--help"])
    assert "not forgery" in " ".join(capsys.readouterr().out.split())

def test_a_bundled_file_that_is_not_the_shipped_one_is_refused(case, monkeypatch):
    folder = case / "weights"; folder.mkdir()
    ck = load_checkpoint("fid-storm-x4-emccd")
    torch.save(ck | {"pretrained": {"name": "fid-storm-x4-emccd", "note": "edited"}}, folder / "fid-storm-x4-emccd.pt")
    monkeypatch.setattr("dl4smlm.checkpoint.weights_dir", lambda: folder)
    with pytest.raises(CheckpointError, match="not the file this dl4smlm shipped"): load_checkpoint("fid-storm-x4-emccd")

def test_the_shipped_bundled_files_match_their_record():
    for name, digests in BUNDLED_DIGESTS.items():
        p = bundled_path(name)
        if p is not None: assert bundled_digests(p) == digests, name

# ---- unknown names are refused before any work, listing the valid ones

def test_demo_with_an_unknown_bundled_model(capsys, case):
    line = refused(capsys, case, ["demo", "--out", case / "report", "--bundled", "fid-storm-x8-emcd"], "fid-storm-x8-emcd", "fid-storm-x8-emccd")
    assert "choose from" in line
    with pytest.raises(ValueError, match="fid-storm-x8-emccd"): demo_module.run_demo(case / "report", bundled="fid-storm-x8-emcd")
    assert not (case / "report").exists()

@pytest.mark.parametrize("argv", [["export", "fid-storm-x8-emcd", "--out", "{d}/x"], ["calibrate", "fid-storm-x8-emcd", "{d}", "--out", "{d}/c.pt"]])
def test_other_commands_with_an_unknown_bundled_model(capsys, case, argv):
    refused(capsys, case, [a.format(d=case) for a in argv], "fid-storm-x8-emcd")

# ---- the package reads every stack it writes

@pytest.mark.parametrize("shape, dtype, compression", [
    ((1, 16, 16), np.uint16, None), ((5, 1, 1), np.uint16, None), ((1, 1, 1), np.float32, None), ((5, 1, 16), np.uint16, None),
    ((5, 16, 1), np.float32, None), ((1, 16, 16), np.float32, "zlib"), ((3, 1, 7), np.uint16, "zlib")])
def test_read_what_write_stack_wrote(tmp_path, shape, dtype, compression):
    a = (np.arange(np.prod(shape)) % 1000).astype(dtype).reshape(shape)
    write_stack(tmp_path / "s.tif", a, pixel_nm=100, compression=compression)
    back = read_stack(tmp_path / "s.tif")
    assert back.shape == shape and np.array_equal(np.asarray(back), a)

def test_read_one_2d_frame_and_predicts_own_image(capsys, probe, tmp_path):
    write_stack(tmp_path / "one.tif", _clean(probe)[0])                    # a (height, width) frame: a stack of one
    assert read_stack(tmp_path / "one.tif").shape == (1, 48, 48)
    run_ok(capsys, ["predict", "fid-storm-x4-emccd", probe / "emccd" / "frames.tif", "--out", tmp_path / "p", "--device", "cpu"])
    image = read_stack(tmp_path / "p" / "super_resolution.tif")            # predict's own summed image
    assert image.shape == (1, 4 * 48, 4 * 48) and image.dtype == np.float32
    run_ok(capsys, ["fit", tmp_path / "one.tif", "--out", tmp_path / "f", "--camera", "ideal", "--pixel-nm", "100", "--sigma-nm", "110",
                    "--force-stack"])

# ---- an output folder is locked while a run writes it

@pytest.fixture
def held(tmp_path):
    "A folder held by another process (`writing_folder`) until the test ends."
    out = tmp_path / "held"
    code = ("import sys, time\nfrom dl4smlm.files import writing_folder\n"
            "with writing_folder(sys.argv[1], 'dl4smlm predict'):\n    print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield out
    proc.kill(); proc.wait()

LOCKED = {   # command: argv writing into the held folder {o}
    "predict": ["predict", "{d}/model.pt", "{d}/frames.tif", "--out", "{o}", "--device", "cpu"],
    "predict --resume": ["predict", "{d}/model.pt", "{d}/frames.tif", "--out", "{o}", "--device", "cpu", "--resume"],
    "predict --overwrite": ["predict", "{d}/model.pt", "{d}/frames.tif", "--out", "{o}", "--device", "cpu", "--overwrite"],
    "fit": ["fit", "{d}/frames.tif", "--out", "{o}", "--camera", "ideal", "--pixel-nm", "100", "--sigma-nm", "110"],
    "simulate": ["simulate", "{o}", "--frames", "2", "--size", "16"],
    "export": ["export", "{d}/model.pt", "--out", "{o}", "--format", "torchscript"],
    "demo": ["demo", "--out", "{o}", "--epochs", "1"],
}

@pytest.mark.parametrize("command", LOCKED)
def test_a_folder_another_run_writes_is_refused(capsys, case, held, command):
    refused(capsys, held.parent, [a.format(d=case, o=held) for a in LOCKED[command]], "held", "another run is writing it", "process")

def test_a_stale_lock_is_taken(capsys, case):
    lock_file(case / "out").write_text("dl4smlm predict, process 1, started long ago")   # left by a run killed with -9
    run_ok(capsys, ["predict", case / "model.pt", case / "frames.tif", "--out", case / "out", "--device", "cpu"])
    assert (case / "out" / "localizations.csv").is_file() and not lock_file(case / "out").exists()

def test_predict_to_folder_while_held(case, held):
    with pytest.raises(FolderBusy, match="another run"): predict_to_folder(case / "model.pt", case / "frames.tif", held, device="cpu")

# ---- messages that said too little, or the wrong thing

@pytest.mark.parametrize("params", ["null", "[1, 2]", '"emccd"', '{"gain": 300}'])
@pytest.mark.parametrize("command", ["predict", "fit"])
def test_bad_camera_params_beside_the_stack(capsys, case, params, command):
    sim = json.loads((case / "simulation.json").read_text())
    sim["config"]["camera_params"] = json.loads(params)
    (case / "simulation.json").write_text(json.dumps(sim))
    argv = {"predict": ["predict", case / "model.pt", case / "frames.tif", "--out", case / "o", "--device", "cpu"],
            "fit": ["fit", case / "frames.tif", "--out", case / "o"]}[command]
    refused(capsys, case, argv, "simulation.json")                      # was: internal error (TypeError: 'NoneType' object is not a mapping)

def test_fit_failing_late_leaves_nothing(capsys, case, monkeypatch):
    def full(*a, **k): raise OSError(errno.ENOSPC, "No space left on device", "super_resolution.png")
    monkeypatch.setattr(cli, "save_rendering", full)
    refused(capsys, case, ["fit", case / "frames.tif", "--out", case / "o_px" / "a" / "b", "--camera", "ideal", "--pixel-nm", "100",
                           "--sigma-nm", "110"], "No space left")    # no o_px/ (nor o_px/a) left behind, no partial folder

def test_a_blank_stack_with_baseline_given(capsys, case):
    (case / "own").mkdir()                                               # no simulation.json: the gain is to be measured
    write_stack(case / "own" / "dark.tif", np.full((8, 32, 32), 100, np.uint16), pixel_nm=100)
    argv = ["fit", case / "own" / "dark.tif", "--out", case / "o", "--camera", "emccd", "--baseline", "100"]
    refused(capsys, case, argv, "blank")
    line = refused(capsys, case, argv + ["--force-stack"], "dark.tif", "full calibration")
    assert "give --baseline" not in line                                 # it was given (the reported case said to give it)

@pytest.mark.parametrize("command, words", [("simulate", "--frames"), ("predict", "--batch-size"), ("fit", "crop the stack")])
def test_out_of_memory_fix_fits_the_command(capsys, case, monkeypatch, command, words):
    def fail(*a, **k): raise MemoryError()
    monkeypatch.setattr(cli, {"simulate": "simulate_to_folder", "predict": "predict_to_folder", "fit": "fit_frames"}[command], fail)
    argv = {"simulate": ["simulate", case / "x"], "predict": ["predict", case / "model.pt", case / "frames.tif", "--out", case / "p"],
            "fit": ["fit", case / "frames.tif", "--out", case / "f", "--camera", "ideal", "--pixel-nm", "100", "--sigma-nm", "110"]}[command]
    line = refused(capsys, case, argv, words)
    assert command == "predict" or "--batch-size" not in line            # simulate and fit have no --batch-size

def test_ctrl_c_while_starting(case):
    # SIGINT as in a terminal: a test run started in the background inherits it ignored, and Python then keeps ignoring it
    proc = subprocess.Popen([EXE, "simulate", str(case / "x"), "--frames", "2", "--size", "16"], stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.5)                                                      # importing PyTorch: the command has not started yet
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err, err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err

def test_a_closed_pipe_is_not_an_error(case):
    proc = subprocess.Popen([EXE, "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()                                                  # `dl4smlm models | head -0`: the reader is gone
    err = proc.stderr.read(); proc.wait(timeout=60)
    assert proc.returncode == 141 and err == "", err                     # was: "a file: Broken pipe; free space on the disk"

def test_a_float_stack_gives_no_pytorch_warning(capsys, probe, tmp_path):
    write_stack(tmp_path / "f32.tif", _clean(probe).astype(np.float32), pixel_nm=100)
    lines = run_ok(capsys, ["predict", "fid-storm-x4-emccd", tmp_path / "f32.tif", "--out", tmp_path / "p", "--device", "cpu"])
    assert not [line for line in lines if "not writable" in line], lines
