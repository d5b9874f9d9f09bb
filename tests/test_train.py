"""dl4smlm.train: training lowers the loss, exact resume (after an epoch and after Ctrl-C), checkpoints and their errors,
image metrics, the folder/simulation entry point of `dl4smlm train`, and DistributedDataParallel with two CPU processes."""
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import dl4smlm.checkpoint as train_module
from dl4smlm.data import ImageDataset
from dl4smlm.normalize import Normalizer
from dl4smlm.io import save_simulation, write_stack
from dl4smlm.losses import WeightedMSELoss
from dl4smlm.pretrained import bundled_models
from dl4smlm.simulate import SimulationConfig, simulate
from dl4smlm.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, load_model, resolve_device, save_checkpoint
from dl4smlm.evaluate import evaluate, image_metrics
from dl4smlm.train import LOSSES, History, TrainConfig, Trainer, TrainingInterrupted, make_loss
from dl4smlm.workflow import train_from_folder

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def sim():
    return simulate(SimulationConfig(frames=10, height=16, width=16, density=5.0, photons=3000.0, seed=21))


@pytest.fixture(scope="module")
def splits(sim):
    data = ImageDataset(sim.frames, localizations=sim.ground_truth, upsampling=2, patch_size=8, min_emitters=1, patches_per_frame=4)
    return data.split(valid=0.2, test=0.1, seed=0)


SMALL = dict(batch_size=8, progress=False)


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- devices, losses, settings ----

def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("AUTO").type == ("cuda" if torch.cuda.is_available() else "mps" if train_module._mps_available() else "cpu")
    with pytest.raises(ValueError, match="expected one of"): resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"): resolve_device("cuda")
    if not train_module._mps_available():
        with pytest.raises(RuntimeError, match="MPS is not available"): resolve_device("mps")


def test_make_loss():
    assert set(LOSSES) == {"l1l2", "wmse", "wmae"}
    for name, cls in LOSSES.items():
        assert type(make_loss(name.upper())) is cls
    assert make_loss("wmse", lmbda=3.0).lam == 3.0
    assert make_loss("l1l2").blur_target is False and make_loss("l1l2", target="spikes").blur_target is True
    with pytest.raises(ValueError, match="expected one of"): make_loss("mse")


def test_train_config():
    c = TrainConfig.from_dict({**TrainConfig().to_dict(), "from_the_future": 1}, epochs=7)
    assert c.epochs == 7 and c.lr == 1e-3 and c.lr_factor == 0.1 and c.lr_patience == 5 and c.min_lr == 5e-5 and c.batch_size == 16
    for bad in (dict(epochs=0), dict(lr=-1.0), dict(lr_factor=1.0), dict(early_stopping=0), dict(grad_clip=0), dict(device="tpu"),
                dict(num_workers=-1), dict(batch_size=2.5)):
        with pytest.raises(ValueError): TrainConfig(**bad)


# ---- training ----

def test_training_lowers_the_loss(splits):
    train, valid, _ = splits
    trainer = Trainer("deep-storm", "l1l2", train, valid, epochs=2, **SMALL)
    assert trainer.loss_spec == {"name": "l1l2", "kwargs": {"blur_target": False}}  # the targets are heat maps already
    before = trainer.validate()
    history = trainer.fit()
    assert min(history.valid_loss) < before
    assert history.epoch == [1, 2] and len(history.train_loss) == len(history.lr) == 2
    assert history.best_epoch == int(np.argmin(history.valid_loss)) + 1
    best, best_epoch = {k: v.clone() for k, v in trainer.best_state.items()}, history.best_epoch
    assert trainer.model.training  # left in training mode for more epochs
    trainer.fit(epochs=3)  # continue the same trainer
    assert trainer.history.epoch == [1, 2, 3]
    if trainer.history.best_epoch == best_epoch:
        assert all(torch.equal(best[k], v) for k, v in trainer.best_state.items())


class FlatValidation(nn.Module):
    "MSE while training; a constant during validation, so the validation loss never improves after the first epoch."
    def forward(self, p, t): return nn.functional.mse_loss(p, t) if torch.is_grad_enabled() else torch.tensor(1.0)


def test_early_stopping_keeps_the_best_weights(splits, tmp_path):
    train, valid, _ = splits
    trainer = Trainer("srcnn", FlatValidation(), train, valid, epochs=30, early_stopping=2, out=tmp_path / "m.pt", **SMALL)
    h = trainer.fit()
    assert h.stopped_early and h.epoch == [1, 2, 3] and h.best_epoch == 1
    model = load_model(tmp_path / "m.pt")
    assert all(torch.equal(v, trainer.best_state[k]) for k, v in model.state_dict().items())
    assert not same_weights(model, trainer.model)  # the last epoch's weights are not the ones kept
    assert load_checkpoint(tmp_path / "m.pt")["best_epoch"] == 1


def test_plateau_scheduler_lowers_the_learning_rate(splits):
    train, valid, _ = splits
    default = Trainer("srcnn", "wmse", train, valid, **SMALL).scheduler
    assert isinstance(default, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (default.factor, default.patience, default.min_lrs) == (0.1, 5, [5e-5])
    trainer = Trainer("srcnn", FlatValidation(), train, valid, epochs=5, lr=1e-3, lr_patience=1, lr_factor=0.5, early_stopping=None, **SMALL)
    assert trainer.fit().lr == [1e-3, 1e-3, 1e-3, 5e-4, 5e-4]


def test_resume_continues_bit_for_bit(splits, tmp_path):
    train, valid, _ = splits
    straight = Trainer("u-storm", "l1l2", train, valid, epochs=4, **SMALL)   # a U-Net with batch norm
    straight.fit()
    first = Trainer("u-storm", "l1l2", train, valid, epochs=2, out=tmp_path / "a.pt", **SMALL)
    first.fit()
    resumed = Trainer.resume(tmp_path / "a.pt", train, valid, epochs=4, progress=False)
    assert resumed.epoch == 2
    resumed.fit()
    assert same_weights(straight.model, resumed.model)
    assert resumed.history.valid_loss == straight.history.valid_loss
    assert resumed.history.train_loss == straight.history.train_loss
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)
    assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()


class InterruptAt(nn.Module):
    "A loss that sends SIGINT (Ctrl-C) to this process on its `at`-th call during training."
    def __init__(self, loss, at):
        super().__init__()
        self.loss, self.at, self.calls = loss, at, 0

    def forward(self, p, t):
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == self.at: signal.raise_signal(signal.SIGINT)
        return self.loss(p, t)


def test_ctrl_c_saves_a_checkpoint_that_resumes_bit_for_bit(splits, tmp_path):
    train, valid, _ = splits
    handler = signal.getsignal(signal.SIGINT)   # default_int_handler, or SIG_IGN in a background job
    straight = Trainer("srcnn", "wmse", train, valid, epochs=3, **SMALL)
    straight.fit()
    steps_per_epoch = math.ceil(len(train) / 8)
    stopped = Trainer("srcnn", "wmse", train, valid, epochs=3, out=tmp_path / "b.pt", **SMALL)
    stopped.loss_fn = InterruptAt(stopped.loss_fn, at=steps_per_epoch + 2)  # during the second epoch
    with pytest.raises(TrainingInterrupted, match="epoch 2, step 2") as e:
        stopped.fit()
    assert e.value.checkpoint == tmp_path / "b.pt"
    ck = load_checkpoint(tmp_path / "b.pt")
    assert (ck["epoch"], ck["resume"]["step"]) == (1, 2)
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is given back
    resumed = Trainer.resume(tmp_path / "b.pt", train, valid, progress=False)
    resumed.fit()
    assert same_weights(straight.model, resumed.model)
    assert resumed.history.valid_loss == straight.history.valid_loss


def test_interrupt_without_out_keeps_the_state_in_memory(splits):
    train, valid, _ = splits
    straight = Trainer("srcnn", "wmse", train, valid, epochs=2, **SMALL)
    straight.fit()
    t = Trainer("srcnn", "wmse", train, valid, epochs=2, **SMALL)
    t.loss_fn = InterruptAt(t.loss_fn, at=3)
    with pytest.raises(TrainingInterrupted, match="calling fit"): t.fit()
    t.fit()  # carries on where it stopped
    assert same_weights(straight.model, t.model)


def test_dataloader_workers_do_not_change_the_result(splits):
    train, valid, _ = splits
    a = Trainer("srcnn", "wmse", train, valid, epochs=1, **SMALL)
    a.fit()
    b = Trainer("srcnn", "wmse", train, valid, epochs=1, num_workers=2, **SMALL)
    b.fit()
    assert same_weights(a.model, b.model) and a.history.valid_loss == b.history.valid_loss


def test_deterministic_mode_restores_global_settings(splits):
    train, valid, _ = splits
    before = torch.are_deterministic_algorithms_enabled()
    a = Trainer("srcnn", "wmse", train, valid, epochs=1, deterministic=True, **SMALL)
    a.fit()
    assert torch.are_deterministic_algorithms_enabled() == before
    b = Trainer("srcnn", "wmse", train, valid, epochs=1, deterministic=True, **SMALL)
    b.fit()
    assert same_weights(a.model, b.model)


def test_trainer_errors(splits):
    train, valid, _ = splits
    with pytest.raises(ValueError, match="upsampling"): Trainer(train_module.get_model("srcnn", upsampling=4), "wmse", train)
    with pytest.raises(TypeError, match="upsampling"): Trainer("srcnn", "wmse", [(torch.zeros(1, 4, 4), torch.zeros(1, 8, 8))])
    with pytest.raises(ValueError, match="get_model"): Trainer("no-such-net", "wmse", train)
    with pytest.raises(ValueError, match="no validation data"): Trainer("srcnn", "wmse", train, **SMALL).validate()


def test_a_custom_loss_module(splits, tmp_path):
    train, valid, _ = splits
    t = Trainer("srcnn", nn.MSELoss(), train, valid, epochs=1, out=tmp_path / "c.pt", **SMALL)
    t.fit()
    assert load_checkpoint(tmp_path / "c.pt")["loss"]["name"] == "MSELoss"
    with pytest.raises(ValueError, match="pass `loss`"): Trainer.resume(tmp_path / "c.pt", train, valid)
    Trainer.resume(tmp_path / "c.pt", train, valid, loss=nn.MSELoss(), epochs=2, progress=False).fit()


# ---- checkpoints ----

@pytest.fixture(scope="module")
def checkpoint(splits, tmp_path_factory):
    train, valid, _ = splits
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    trainer = Trainer("fid-storm", "wmae", train, valid, epochs=1, out=path, model_kwargs={"blocks": 2}, loss_kwargs={"lam": 2.0}, **SMALL)
    trainer.fit()
    return path, trainer


def test_checkpoint_contents(checkpoint):
    path, trainer = checkpoint
    ck = load_checkpoint(path)
    assert ck["format"] == CHECKPOINT_FORMAT and ck["format_version"] == 1
    assert ck["model"] == {"name": "fid-storm", "kwargs": {"blocks": 2}} and ck["upsampling"] == 2
    assert ck["loss"] == {"name": "wmae", "kwargs": {"lam": 2.0}}
    assert Normalizer.from_dict(ck["normalizer"]) == trainer.train_data.normalizer
    assert ck["target"]["kind"] == "heatmap" and ck["pixel_nm"] == 100.0
    assert ck["training"]["epochs"] == 1 and ck["dl4smlm_version"]
    assert History.from_dict(ck["history"]) == trainer.history
    assert set(ck["resume"]["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind


def test_load_model_is_ready(checkpoint, splits):
    path, trainer = checkpoint
    model = load_model(path, device="cpu")
    assert type(model).__name__ == "FIDSTORM" and not model.training
    assert model.normalizer == trainer.train_data.normalizer
    x = splits[2][0][0][None]
    trainer.model.load_state_dict(trainer.best_state)
    trainer.model.eval()
    with torch.no_grad(): assert torch.equal(model(x), trainer.model(x))


def test_checkpoint_errors(checkpoint, tmp_path):
    path, _ = checkpoint
    blob = path.read_bytes()
    cases = {"truncated.pt": blob[: len(blob) * 2 // 3], "empty.pt": b"", "noise.pt": os.urandom(4096),
             "flipped.pt": blob[: len(blob) // 2] + bytes([blob[len(blob) // 2] ^ 0x01]) + blob[len(blob) // 2 + 1:],
             "head.pt": blob[:200]}
    expected = {"truncated.pt": "truncated", "empty.pt": "empty file", "noise.pt": "not a PyTorch checkpoint",
                "flipped.pt": "corrupted", "head.pt": "truncated"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=expected[name]): load_model(tmp_path / name)
    with pytest.raises(FileNotFoundError): load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a dl4smlm checkpoint"): load_checkpoint(tmp_path / "plain.pt")
    ck = load_checkpoint(path)
    for change, message in ((dict(format_version=99), "upgrade dl4smlm"), (dict(model={"name": "resnet", "kwargs": {}}), "not one of"),
                            (dict(model={"name": "fid-storm", "kwargs": {}}), "do not fit"),
                            (dict(model={"name": "fid-storm", "kwargs": {"depth": 3}}), "cannot build"),
                            (dict(upsampling=4), "do not fit")):
        save_checkpoint(tmp_path / "changed.pt", {**ck, **change})
        with pytest.raises(CheckpointError, match=message): load_model(tmp_path / "changed.pt")
    save_checkpoint(tmp_path / "partial.pt", {k: v for k, v in ck.items() if k != "normalizer"})
    with pytest.raises(CheckpointError, match="missing"): load_checkpoint(tmp_path / "partial.pt")
    save_checkpoint(tmp_path / "final.pt", {**ck, "resume": None})
    with pytest.raises(CheckpointError, match="no training state"): Trainer.resume(tmp_path / "final.pt", None)


def test_a_stranger_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self): return (os.system, (f"touch {marker}",))

    torch.save({"format": CHECKPOINT_FORMAT, "format_version": 1, "state_dict": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused.*posix.system|refused.*system"): load_model(tmp_path / "evil.pt")
    assert not marker.exists()


def test_checkpoint_is_written_atomically(checkpoint, tmp_path, monkeypatch):
    path, trainer = checkpoint
    target = tmp_path / "model.pt"
    trainer.save(target)
    before = target.read_bytes()

    def broken_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(train_module.torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"): trainer.save(target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["model.pt"]


# ---- metrics ----

def test_image_metrics():
    rng = np.random.default_rng(0)
    t = np.zeros((32, 32))
    t[rng.integers(0, 32, 20), rng.integers(0, 32, 20)] = 100.0
    m = image_metrics(t, t)
    assert m["nmse"] == 0 and m["psnr"] == math.inf and math.isclose(m["ssim"], 1.0)
    assert image_metrics(np.zeros_like(t), t)["nmse"] == 1.0
    p = t + rng.normal(0, 5, t.shape)
    m = image_metrics(p, t)
    assert math.isclose(m["nmse"], ((p - t) ** 2).sum() / (t ** 2).sum()) and math.isclose(m["nrmse"], math.sqrt(m["nmse"]))
    assert math.isclose(m["psnr"], 10 * math.log10(100.0 ** 2 / ((p - t) ** 2).mean()))
    shifted = np.roll(t, 3, axis=0)
    assert image_metrics(shifted, t)["nmse"] > 1.5  # the old formula, (Σ(p−t))²/(Σt)², gives 0 here
    assert math.isnan(image_metrics(t, np.zeros_like(t))["nmse"])
    with pytest.raises(ValueError, match="same"): image_metrics(t, t[:5])


def test_evaluate_whole_frames(checkpoint, splits):
    path, _ = checkpoint
    test = splits[2]
    df = evaluate(load_model(path), test, device="cpu", batch_size=1)
    assert list(df.columns) == ["item", "frame", "nmse", "nrmse", "psnr", "ssim"]
    assert df.frame.tolist() == (test.indices + 1).tolist() and np.isfinite(df[["nmse", "psnr", "ssim"]].to_numpy()).all()


# ---- what `dl4smlm train` runs ----

FOLDER = dict(model="srcnn", upsampling=2, loss="wmse", epochs=2, batch_size=8, patch_size=8, min_emitters=1, patches_per_frame=2,
              progress=False)


def test_train_from_folder(sim, tmp_path):
    save_simulation(tmp_path / "data", sim)
    path, h = train_from_folder(tmp_path / "data", out=tmp_path / "m.pt", lmbda=2.0, **FOLDER)
    assert path == tmp_path / "m.pt" and h.epoch == [1, 2] and set(h.test) == {"nmse", "nrmse", "psnr", "ssim"}
    ck = load_checkpoint(path)
    assert ck["simulation"]["seed"] == 21 and ck["history"]["test"] == h.test and ck["loss"]["kwargs"] == {"lam": 2.0}
    assert ck["data"]["frames"].endswith("frames.tif")
    with pytest.raises(FileExistsError, match="--overwrite"): train_from_folder(tmp_path / "data", out=path, **FOLDER)
    with pytest.raises(ValueError, match="--epochs 3 conflicts with the run being resumed"):
        train_from_folder(tmp_path / "data", out=path, resume=path, **{**FOLDER, "epochs": 3})
    path, h = train_from_folder(tmp_path / "data", out=path, resume=path, **FOLDER)   # finished already: nothing more to do
    assert h.epoch == [1, 2]
    train_from_folder(tmp_path / "data", out=path, overwrite=True, **{**FOLDER, "epochs": 1})
    assert load_checkpoint(path)["epoch"] == 1
    with pytest.raises(ValueError, match="not both or neither"): train_from_folder(out=tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="no such folder"): train_from_folder(tmp_path / "nowhere", out=tmp_path / "x.pt")


def _stop_in_epoch(monkeypatch, epoch):
    "Make the next `fit` stop as Ctrl-C would, after the first step of `epoch` (from 0)."
    run_epoch = Trainer._train_epoch
    def stopping(self, show):
        if self.epoch == epoch: self.request_stop()
        return run_epoch(self, show)
    monkeypatch.setattr(Trainer, "_train_epoch", stopping)


RUN = dict(model="srcnn", upsampling=2, loss="wmse", epochs=3, batch_size=4, lr=5e-3, patch_size=8, min_emitters=1, patches_per_frame=2,
           progress=False, calibrate=False)


@pytest.fixture
def interrupted(sim, tmp_path, monkeypatch):
    "A folder run of 3 epochs stopped in its second, in the working directory beside an unrelated model.pt."
    save_simulation(tmp_path / "data", sim)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"another model")
    _stop_in_epoch(monkeypatch, 1)
    with pytest.raises(TrainingInterrupted) as e: train_from_folder(tmp_path / "data", out="int.pt", **RUN)
    assert e.value.checkpoint == Path("int.pt")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    return tmp_path / "int.pt"


def test_resume_continues_that_run(interrupted, tmp_path):
    path, h = train_from_folder(resume="int.pt", progress=False, calibrate=False)   # data and settings: the run's
    assert path == Path("int.pt") and h.epoch == [1, 2, 3]
    assert (tmp_path / "model.pt").read_bytes() == b"another model"
    ck = load_checkpoint(interrupted)
    assert ck["epoch"] == 3 and ck["model"]["name"] == "srcnn" and ck["loss"]["name"] == "wmse"
    assert (ck["training"]["epochs"], ck["training"]["batch_size"], ck["training"]["lr"]) == (3, 4, 5e-3)
    assert ck["data"]["run"]["patch_size"] == 8 and ck["data"]["run"]["data_dir"] == str(tmp_path / "data")


def test_resume_refuses_conflicting_options(interrupted, tmp_path):
    before = sorted(p.name for p in tmp_path.iterdir()), interrupted.read_bytes()
    with pytest.raises(ValueError, match=r"^--epochs 50 conflicts with the run being resumed from int.pt \(epochs 3\); leave it out"):
        train_from_folder(resume="int.pt", epochs=50, progress=False)
    with pytest.raises(ValueError, match=r"--model deep-storm, --batch-size 16, --lr 0.001 conflict .*\(model srcnn, batch size 4, lr 0.005\)"):
        train_from_folder(tmp_path / "data", resume="int.pt", model="deep-storm", batch_size=16, lr=1e-3, progress=False)
    with pytest.raises(ValueError, match="trained on a data folder"):
        train_from_folder(resume="int.pt", simulate_config=SimulationConfig(), progress=False)
    with pytest.raises(FileExistsError, match="model.pt: already exists"): train_from_folder(resume="int.pt", out="model.pt")
    assert (sorted(p.name for p in tmp_path.iterdir()), interrupted.read_bytes()) == before
    path, h = train_from_folder(resume="int.pt", out="elsewhere.pt", epochs=3, lr=0.005, progress=False, calibrate=False)
    assert path == Path("elsewhere.pt") and h.epoch == [1, 2, 3] and interrupted.read_bytes() == before[1]


def test_unfinished_checkpoint_is_refused(sim, tmp_path, monkeypatch):
    save_simulation(tmp_path / "data", sim)
    _stop_in_epoch(monkeypatch, 0)
    with pytest.raises(TrainingInterrupted): train_from_folder(tmp_path / "data", out=tmp_path / "early.pt", **RUN)
    with pytest.raises(CheckpointError, match="finished no epoch; resume it with --resume or train longer"): load_model(tmp_path / "early.pt")
    assert not load_model(tmp_path / "early.pt", unfinished=True).training


def test_output_checked_before_training(sim, tmp_path, monkeypatch):
    save_simulation(tmp_path / "data", sim)
    monkeypatch.setattr(Trainer, "fit", lambda self, epochs=None: pytest.fail("an epoch ran"))
    (tmp_path / "file").write_text("x")
    for out, error in ((tmp_path / "data", IsADirectoryError), (tmp_path / "file" / "m.pt", NotADirectoryError)):
        with pytest.raises(error, match=str(out)): train_from_folder(tmp_path / "data", out=out, **RUN)
    if os.geteuid() != 0:   # root writes anywhere
        (tmp_path / "ro").mkdir(mode=0o500)
        with pytest.raises(PermissionError, match="cannot write"): train_from_folder(tmp_path / "data", out=tmp_path / "ro" / "m.pt", **RUN)
    assert not (tmp_path / "file").is_dir()


@pytest.mark.parametrize("rows, message", [("", "holds no localizations"), ("1,1e6,1e6\n2,-50,30\n", "none of its 2 localizations lies inside")])
def test_data_without_targets_is_refused(tmp_path, monkeypatch, rows, message):
    (tmp_path / "d").mkdir()
    write_stack(tmp_path / "d" / "frames.tif", np.random.default_rng(0).integers(90, 200, (4, 16, 16)).astype(np.uint16))
    (tmp_path / "d" / "locs.csv").write_text("frame,x [nm],y [nm]\n" + rows)
    monkeypatch.setattr(Trainer, "fit", lambda self, epochs=None: pytest.fail("an epoch ran"))
    with pytest.raises(ValueError, match=f"locs.csv: {message}"):
        train_from_folder(tmp_path / "d", out=tmp_path / "m.pt", pixel_nm=100.0, normalization="min-max", **RUN)
    assert not (tmp_path / "m.pt").exists()


def test_checkpoint_settings_cannot_be_edited(checkpoint, tmp_path):
    path, _ = checkpoint
    ck = load_checkpoint(path)
    edits = {"pixel_nm": 110.0, "normalizer": {**ck["normalizer"], "mean": ck["normalizer"]["mean"] + 1},
             "calibration": {"threshold": 0.1, "radius": 1, "bias_nm": [0.0, 0.0]}, "target": {**ck["target"], "scale": 1.0}}
    for key, value in edits.items():
        torch.save({**ck, key: value}, tmp_path / "edited.pt")   # by hand: the digests are those of the original
        with pytest.raises(CheckpointError, match="settings .* were changed"): load_model(tmp_path / "edited.pt")
    save_checkpoint(tmp_path / "resaved.pt", {**ck, "pixel_nm": 110.0})   # written by dl4smlm: new digests
    assert load_model(tmp_path / "resaved.pt").pixel_nm == 110.0


def test_bundled_models_still_load():
    assert bundled_models()
    for name in bundled_models(): assert load_model(name).calibration is not None


def test_train_from_a_simulation(tmp_path):
    cfg = SimulationConfig(height=12, width=12, density=6.0, seed=3)
    path, h = train_from_folder(simulate_config=cfg.to_dict(), out=tmp_path / "s.pt", samples_per_epoch=16, test=0.5,
                                **{**FOLDER, "epochs": 1})
    ck = load_checkpoint(path)
    assert ck["simulation"] == cfg.to_dict() and h.test is not None


DDP_SCRIPT = """
import sys, torch, torch.distributed as dist
from dl4smlm.checkpoint import load_model
from dl4smlm.workflow import train_from_folder
path, h = train_from_folder(sys.argv[1], out=sys.argv[2], model="u-storm", upsampling=2, loss="l1l2", epochs=2, batch_size=4,
                            patch_size=8, min_emitters=1, patches_per_frame=2, test=0.0, progress=False)
print("RESULT", dist.is_initialized(), h.valid_loss)
"""


def test_ddp_with_two_cpu_processes(sim, tmp_path):
    save_simulation(tmp_path / "data", sim)
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(tmp_path / "ddp.py"), str(tmp_path / "data"),
                        str(tmp_path / "ddp.pt")], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    results = [line for line in r.stdout.splitlines() if line.startswith("RESULT")]
    assert len(results) == 2 and results[0] == results[1]       # both ranks saw the same (all-reduced) losses
    assert "False" in results[0]                                # the process group was left at the end
    ck = load_checkpoint(tmp_path / "ddp.pt")
    assert ck["resume"]["world_size"] == 2 and ck["epoch"] == 2
    # each rank trained on its half of every batch: one optimizer step per 2 × 4 patches
    n_train = round(10 * 0.7) * 2
    assert ck["resume"]["optimizer"]["state"][0]["step"].item() == 2 * math.ceil(n_train / 2 / 4)
    load_model(tmp_path / "ddp.pt")
