"Knowledge distillation (dl4smlm.distill): teacher confidence, η, the hint regressor, and both training routines."
import math

import numpy as np
import pytest
import torch
from fastcore.test import test_close as assert_close
from fastcore.test import test_eq as assert_eq
from torch.utils.data import Dataset

from dl4smlm.data import SimulatedDataset
from dl4smlm.normalize import Normalizer
from dl4smlm.distill import (AttentiveImitationLoss, HintRegressor, attention_eta, hint_loss, hint_training, knowledge_transfer,
                             load_hint_regressor, relative_error, save_student, teacher_confidence, teacher_errors)
from dl4smlm.checkpoint import load_model
from dl4smlm.losses import L1L2Loss
from dl4smlm.models import get_model
from dl4smlm.simulate import SimulationConfig

FAST = dict(batch_size=8, lr=1e-3, device="cpu", progress=False, seed=0, early_stopping=None)


class Counting(Dataset):
    "A dataset that counts the items it hands out (and passes on what `Trainer` needs)."
    def __init__(self, data): self.data, self.calls = data, 0
    upsampling = property(lambda self: self.data.upsampling)
    normalizer = property(lambda self: self.data.normalizer)
    target = property(lambda self: self.data.target)
    def set_epoch(self, epoch): self.data.set_epoch(epoch)
    def __len__(self): return len(self.data)
    def __getitem__(self, k):
        self.calls += 1
        return self.data[k]


@pytest.fixture(scope="module")
def data():
    cfg = SimulationConfig(height=24, width=24, density=3.0)
    kw = dict(upsampling=2, patch_size=8, min_emitters=1)
    train = SimulatedDataset(cfg, 16, seed=1, fit_frames=8, **kw)
    valid = SimulatedDataset(cfg, 8, seed=2, fixed=True, normalizer=train.normalizer, **kw)
    return train, valid


@pytest.fixture(scope="module")
def teacher(data):
    t = get_model("deep-storm", 2, seed=3).eval()
    t.normalizer = data[0].normalizer
    return t


# ---- Φ and η ----

def test_confidence_is_per_sample_and_in_unit_interval():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(6, 1, 8, 8, generator=g)
    scale = torch.tensor([0.0, 0.1, 0.5, 1.0, 3.0, 10.0]).view(6, 1, 1, 1)
    p_t = y + scale * torch.randn(6, 1, 8, 8, generator=g)
    errors = relative_error(p_t, y, "mse")
    one = 1e4 * float((L1L2Loss().kernel.double() ** 2).sum())            # one Deep-STORM molecule's ‖y‖²
    assert_close(errors, ((p_t - y) ** 2).sum((1, 2, 3)) / ((y ** 2).sum((1, 2, 3)) + (p_t ** 2).sum((1, 2, 3)) + one), eps=1e-6)
    eta = 0.5 * float(errors.max() - errors.min())   # small η: the formula alone leaves [0, 1] on both sides
    phi = teacher_confidence(p_t, y, eta, "mse")
    assert_eq(phi.shape, (6,))
    assert ((phi >= 0) & (phi <= 1)).all()
    assert_close(phi, (1 - errors / eta).clamp(0, 1), eps=1e-5)
    assert phi[0] == 1 and phi[-1] == 0
    assert (phi[:-1] >= phi[1:]).all()                                   # larger teacher error, less confidence
    for i in range(6):                                                   # each sample's Φ depends on that sample only
        assert_close(teacher_confidence(p_t[i:i + 1], y[i:i + 1], eta, "mse"), phi[i:i + 1], eps=1e-6)
    assert not phi.requires_grad


def _maps(points, size=32):
    "Spikes of 100 (what an L1L2-trained network outputs) and their Deep-STORM heat maps (the targets), (B, 1, size, size) each."
    from dl4smlm.simulate import render_heatmap
    spikes = np.zeros((len(points), size, size), np.float32)
    for b, pts in enumerate(points):
        for r, c in pts: spikes[b, r, c] += 1
    return torch.from_numpy(100 * spikes)[:, None], torch.from_numpy(render_heatmap(spikes, sigma_px=1.0, scale=100.0))[:, None]


def test_confidence_measures_the_teacher_not_the_crowding():
    "Φ of a perfect teacher is 1 on sparse and crowded patches alike; a teacher missing a tenth of the molecules is trusted alike on both."
    rng = np.random.default_rng(0)
    crowded = [tuple(int(v) for v in rng.integers(3, 29, 2)) for _ in range(10)]
    p, y = _maps([[(16, 16)], crowded])
    assert_close(teacher_confidence(p, y, 0.5), torch.ones(2), eps=1e-5)   # a perfect teacher: full confidence, whatever the density
    assert_close(teacher_confidence(y, y, 0.5, "mse"), torch.ones(2))
    ten = [(8 + 8 * (k % 3), 6 + 5 * (k // 3)) for k in range(10)]        # 10 separate molecules
    (p_miss, _), (_, y_ten) = _maps([ten[1:]]), _maps([ten])
    e_crowded = relative_error(p_miss, y_ten, "l1l2")
    e_sparse = relative_error(torch.zeros(1, 1, 32, 32), _maps([[(16, 16)]])[1], "l1l2")
    assert_close(e_sparse, torch.tensor([0.5]), eps=1e-3)                 # missing the only molecule: 1/(1 + 0 + 1)
    assert_close(e_crowded, torch.tensor([1 / 20]), eps=2e-3)             # missing 1 of 10: 1/(10 + 9 + 1), the share missed, not 10× the error
    noise = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.05
    assert relative_error(noise, torch.zeros(1, 1, 32, 32)).item() < 0.01  # faint noise on an empty patch is nearly right
    assert_eq(relative_error(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)), torch.zeros(1))   # nothing to find, nothing found


def test_unlabelled_samples_take_the_teacher_as_label():
    g = torch.Generator().manual_seed(2)
    p, y, q = (torch.rand(2, 1, 16, 16, generator=g) for _ in range(3))
    y_free = y.clone(); y_free[1] = float("nan")
    assert_eq(teacher_confidence(q, y_free, 0.3, "mse")[1], torch.tensor(1.0))
    assert_eq(teacher_confidence(q, y_free, 0.3)[1], torch.tensor(1.0))          # with L1L2 too (it blurs p_T, not a heat-map y)
    assert_eq(teacher_confidence(q, y_free, 0.3)[0], teacher_confidence(q[:1], y[:1], 0.3)[0])   # the labelled one as usual
    loss = AttentiveImitationLoss(1.0, alpha=0.5, distance="mse")
    expected = 0.5 * (loss(p[:1], y[:1], q[:1]) + ((p[1] - q[1]) ** 2).mean())   # the unlabelled sample: ‖p_S − p_T‖² only
    assert_close(loss(p, y_free, q), expected, eps=1e-6)
    assert torch.isfinite(loss(p, y_free, q))


def test_confidence_with_l1l2_distance_blurs():
    y = torch.zeros(1, 1, 16, 16)
    y[0, 0, 8, 8] = 1.0
    shifted = torch.roll(y, 1, -1)
    e_mse = 1 - teacher_confidence(shifted, y, 2.0, "mse")
    e_l1l2 = 1 - teacher_confidence(shifted, y, 2.0, L1L2Loss(blur_target=True))
    assert e_l1l2 < e_mse                                                # a one-pixel shift costs less once blurred


def test_eta_is_max_minus_min_and_refuses_equal_errors():
    assert_close(attention_eta([0.3, 2.0, 0.7]), 1.7)
    with pytest.raises(ValueError, match="η = max − min = 0"): attention_eta([1.0, 1.0])
    with pytest.raises(ValueError, match="two or more"): attention_eta([1.0])
    with pytest.raises(ValueError, match="eta"): teacher_confidence(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), -1.0)
    with pytest.raises(ValueError, match="distance"): teacher_confidence(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), 1.0, "l2")


def test_teacher_errors_one_per_training_item_in_order(data, teacher):
    train, _ = data
    counted = Counting(train)
    e = teacher_errors(teacher, counted, device="cpu", batch_size=5)
    assert_eq(e.shape, (len(train),))
    assert_eq(counted.calls, len(train))                                 # one pass over the training set
    x, y = train[3]
    with torch.no_grad(): p = teacher(x[None])
    assert_close(e[3], float(relative_error(p, y[None], "l1l2")), eps=1e-5)   # default distance: the teacher's loss (L1L2)
    teacher.loss = {"name": "wmse", "kwargs": {}}
    try: assert_close(teacher_errors(teacher, train, device="cpu")[3], float(relative_error(p, y[None], "mse")), eps=1e-3)
    finally: del teacher.loss
    assert not teacher.training


def test_eta_is_computed_once_from_the_training_set(data, teacher):
    train, _ = data
    expected = attention_eta(teacher_errors(teacher, train, "l1l2", device="cpu"))
    counted = Counting(train)
    run = knowledge_transfer("srcnn", teacher, counted, epochs=1, distance="l1l2", **FAST)
    assert_eq(counted.calls, len(train) + len(train))                    # one pass for η, then one epoch of training
    assert_close(run.eta, expected, eps=1e-5 * expected)              # the frozen copy folds batch norm: equal up to rounding
    counted = Counting(train)
    run = knowledge_transfer("srcnn", teacher, counted, epochs=1, eta=0.25, **FAST)
    assert_eq(counted.calls, len(train))                                 # η given: no pass over the data for it
    assert_eq(run.eta, 0.25)
    counted = Counting(train)
    run = hint_training("srcnn", teacher, counted, guided="mapping", hint="dec1", hint_epochs=1, epochs=1, **FAST)
    assert_eq(counted.calls, 2 + len(train) + 2 * len(train))            # 2 items size the regressor, one pass for η, 2 epochs
    assert run.eta > 0


# ---- the regressor ----

@pytest.mark.parametrize("cs, ct, scale, size, expected", [
    (32, 64, 1 / 2, 64, (64, 32)),     # student map larger: space-to-depth
    (32, 512, 1 / 8, 64, (512, 8)),
    (64, 32, 4, 16, (32, 64)),         # student map smaller: depth-to-space
    (16, 16, 1, 20, (16, 20)),
])
def test_regressor_shapes(cs, ct, scale, size, expected):
    for k in (1, 3):
        out = HintRegressor(cs, ct, scale, kernel_size=k)(torch.randn(2, cs, size, size))
        assert_eq(out.shape, (2, expected[0], expected[1], expected[1]))


def test_regressor_between_real_models_with_mismatched_layers():
    x = torch.randn(1, 1, 8, 8)
    dstorm, fid, srcnn = get_model("deep-storm", 4, seed=0), get_model("fid-storm", 4, seed=0), get_model("srcnn", 4, seed=0)
    for student, guided, teacher, hint in ((fid, "body", dstorm, "dec1"),      # (64, 8, 8) → (32, 32, 32)
                                           (srcnn, "mapping", dstorm, "bottleneck"),  # (32, 32, 32) → (512, 4, 4)
                                           (srcnn, "extraction", fid, "body")):  # (64, 32, 32) → (64, 8, 8)
        r = HintRegressor.between(student, teacher, guided, hint, x)
        g, h = student.features(x)[guided], teacher.features(x)[hint]
        assert g.shape[-2:] != h.shape[-2:]
        assert_eq(r(g).shape, h.shape)
        assert r.relu == bool((h >= 0).all())                             # ReLU only for a non-negative hint layer
    assert HintRegressor.between(fid, dstorm, "body", "dec1", x).relu
    assert not HintRegressor.between(srcnn, fid, "extraction", "body", x).relu


def test_regressor_between_keeps_batch_norm_statistics():
    x = torch.randn(2, 1, 8, 8) * 5 + 3
    fid, dstorm = get_model("fid-storm", 4, seed=0), get_model("deep-storm", 4, seed=0)
    before = {k: v.clone() for k, v in fid.state_dict().items()}
    HintRegressor.between(fid, dstorm, "body", "dec1", x)
    assert all(torch.equal(v, before[k]) for k, v in fid.state_dict().items())
    assert fid.training and dstorm.training


def test_regressor_refuses_what_it_cannot_map():
    with pytest.raises(ValueError, match="integer s or 1/s"): HintRegressor(8, 8, scale=3 / 2)
    with pytest.raises(ValueError, match="odd"): HintRegressor(8, 8, kernel_size=2)
    with pytest.raises(ValueError, match="scale"): HintRegressor(8, 8, scale=0)
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"): HintRegressor(8, 8)(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match="not multiples of 4"): HintRegressor(8, 8, scale=1 / 4)(torch.zeros(1, 8, 10, 10))
    x = torch.randn(1, 1, 12, 12)
    dstorm = get_model("deep-storm", 2, seed=0)
    with pytest.raises(ValueError, match="integer ratio"):   # a 36×36 guided map (SRCNN, f = 3) and a 24×24 hint (Deep-STORM, f = 2)
        HintRegressor.between(get_model("srcnn", 3, seed=0), dstorm, "mapping", "dec1", x)
    with pytest.raises(ValueError, match="expected one of"): HintRegressor.between(get_model("srcnn", 2), dstorm, "mapping", "dec9", x)


def test_hint_loss_needs_equal_shapes_and_weights_samples():
    h = torch.zeros(2, 3, 4, 4)
    assert_close(hint_loss(h + 2, h), 2.0)                                # ½·mean(2²)
    assert_close(hint_loss(h + 2, h, torch.tensor([0.5, 0.0])), 0.5)
    with pytest.raises(ValueError, match="HintRegressor.between"): hint_loss(torch.zeros(2, 3, 8, 8), h)


# ---- the loss ----

def test_imitation_loss_limits():
    g = torch.Generator().manual_seed(1)
    p, y, q = (torch.rand(3, 1, 16, 16, generator=g) for _ in range(3))
    assert_close(AttentiveImitationLoss(1.0, alpha=1.0, distance="mse")(p, y, q), torch.nn.functional.mse_loss(p, y), eps=1e-6)
    assert_close(AttentiveImitationLoss(1.0, alpha=1.0)(p, y, q), L1L2Loss(blur_target=False)(p, y), eps=1e-6)   # default: L1L2
    assert_close(AttentiveImitationLoss(1.0, alpha=0.0, distance="mse")(q, y, q), 0.0)    # the student already is the teacher
    with pytest.raises(ValueError, match="alpha"): AttentiveImitationLoss(1.0, alpha=-0.1)
    with pytest.raises(ValueError, match="eta"): AttentiveImitationLoss(math.nan)
    with pytest.raises(ValueError, match="one shape"): AttentiveImitationLoss(1.0)(p, y, q[..., :8])


# ---- the routines ----

def test_hint_training_lowers_the_hint_and_task_losses(data, teacher):
    train, valid = data
    # the fixture's teacher is untrained, as wrong on every patch as an empty map: Φ would be 0 everywhere, so no attention here
    e = teacher_errors(teacher, train, device="cpu")
    assert (e > 0.4).all() and (1 - e / attention_eta(e) <= 0).all()
    run = hint_training("srcnn", teacher, train, valid, guided="mapping", hint="dec2", hint_epochs=2, epochs=2,
                        attentive=False, **FAST)
    for stage in ("hint", "task"):
        assert run.histories[stage].valid_loss[-1] < run.initial_valid_loss[stage], stage
    assert_eq(run.regressor(torch.zeros(1, 32, 16, 16)).shape, (1, 64, 8, 8))   # the space-to-depth regressor was used
    assert_eq(run.student.normalizer, train.normalizer)


def test_hint_training_with_a_student_that_upsamples_late(data, teacher):
    train, valid = data
    student = get_model("fid-storm", 2, seed=0, blocks=2)          # guided 'body' on the camera grid, 8×8; hint 'dec1' 16×16
    run = hint_training(student, teacher, train, valid, guided="body", hint="dec1", hint_epochs=2, epochs=0,
                        attentive=False, **FAST)
    assert run.histories["hint"].valid_loss[-1] < run.initial_valid_loss["hint"]
    assert run.regressor.up == 2 and run.eta is None


def test_stage_one_trains_only_up_to_the_guided_layer_and_leaves_the_teacher(data, teacher):
    train, _ = data
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    run = hint_training("srcnn", teacher, train, guided="extraction", hint="enc1", hint_epochs=1, epochs=0, attentive=False, **FAST)
    initial = get_model("srcnn", 2, seed=0)
    assert not torch.equal(run.student.extraction[0].weight, initial.extraction[0].weight)
    for later in ("mapping", "reconstruction"):
        assert all(torch.equal(a, b) for a, b in zip(getattr(run.student, later).parameters(), getattr(initial, later).parameters()))
    assert all(p.requires_grad for p in run.student.parameters())        # the later layers are frozen for stage 1 only
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert not teacher.training


def test_knowledge_transfer_lowers_its_loss(data, teacher):
    train, valid = data
    for distance in ("mse", "l1l2"):
        run = knowledge_transfer("srcnn", teacher, train, valid, epochs=2, alpha=0.5, distance=distance, **FAST)
        assert run.histories["imitation"].valid_loss[-1] < run.initial_valid_loss["imitation"], distance
        assert not run.student.training


def test_routines_check_teacher_student_and_data(data, teacher):
    train, _ = data
    with pytest.raises(ValueError, match="same factor"): knowledge_transfer("srcnn", get_model("deep-storm", 4), train, epochs=1, **FAST)
    other = get_model("deep-storm", 2)
    other.normalizer = Normalizer(0.1, 0.2)
    with pytest.raises(ValueError, match="normalizer=teacher.normalizer"): knowledge_transfer("srcnn", other, train, epochs=1, **FAST)
    with pytest.raises(ValueError, match="expected one of"):
        hint_training("srcnn", teacher, train, guided="nope", hint="dec1", hint_epochs=1, epochs=0, **FAST)
    with pytest.raises(ValueError, match="no trainable layer before it"):
        hint_training("srcnn", teacher, train, guided="upsampled", hint="enc1", hint_epochs=1, epochs=0, **FAST)
    with pytest.raises(ValueError, match="hint_epochs"):
        hint_training("srcnn", teacher, train, guided="mapping", hint="dec1", hint_epochs=0, **FAST)
    with pytest.raises(TypeError, match="student"): knowledge_transfer(3, teacher, train, epochs=1, **FAST)


def test_unlabelled_frames_join_hints_and_transfer_and_the_regressor_is_saved(data, teacher, tmp_path):
    train, valid = data
    cfg = SimulationConfig(height=24, width=24, density=3.0)
    free = SimulatedDataset(cfg, 24, seed=7, upsampling=2, patch_size=8, min_emitters=1, normalizer=train.normalizer)
    counted = Counting(free)
    run = knowledge_transfer("srcnn", teacher, train, valid, unlabelled=counted, epochs=1, **FAST)
    assert_eq(counted.calls, len(free))                                  # one epoch over labelled + unlabelled; η from the labelled only
    assert math.isfinite(run.histories["imitation"].train_loss[-1])
    counted = Counting(free)
    run = hint_training("srcnn", teacher, train, valid, unlabelled=counted, guided="mapping", hint="dec2", hint_epochs=1, epochs=1, **FAST)
    assert_eq(counted.calls, len(free))                                  # stage 1 only: the task stage needs labels
    path = save_student(run, tmp_path / "student.pt", train)
    r = load_hint_regressor(path)
    x = torch.randn(1, 32, 16, 16)
    with torch.no_grad(): assert_close(r(x), run.regressor.eval()(x), eps=1e-6)
    assert load_model(path) is not None
    kt = knowledge_transfer("srcnn", teacher, train, epochs=1, **FAST)
    with pytest.raises(ValueError, match="no hint regressor"): load_hint_regressor(save_student(kt, tmp_path / "kt.pt", train))
    with pytest.raises(ValueError, match="normalizer=train_data.normalizer"):
        knowledge_transfer("srcnn", teacher, train, unlabelled=SimulatedDataset(cfg, 4, seed=8, upsampling=2, patch_size=8,
                                                                                 normalizer=Normalizer(0.1, 0.2)), epochs=1, **FAST)


def test_distillation_says_it_runs_in_one_process(data, teacher, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2"); monkeypatch.setenv("RANK", "0"); monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(RuntimeError, match="without torchrun"): knowledge_transfer("srcnn", teacher, data[0], epochs=1, **FAST)
