"""A catalogue of bad inputs: each row runs the `dl4smlm` command on one kind of bad input and checks that it stops with
exit status 2 (130 for Ctrl-C), one error line on stderr that names the input (no traceback), and that nothing was
written or lost in the folder it works in.

The kinds, by group:

- TIFF stacks: not a TIFF, empty file, truncated (half the data, only the header, the page chain cut), damaged
  compressed data, RGB, 4-D, a single 2-D image, NaN pixels, infinite pixels, complex pixels, a missing file,
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
    "single 2-D image":      (lambda c: tifffile.imwrite(c/"bad.tif", np.zeros((16, 16), np.uint16)), "single 2-D image"),
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
    "out of memory":      (MemoryError(), 2, "--batch-size"),
    "CUDA out of memory": (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), 2, "--batch-size"),
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
