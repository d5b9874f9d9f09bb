"""distill.save_student records the loss the student was trained with (issue 23): a later distillation from that student
(`distance=None`: the teacher's own loss, read from its checkpoint by `load_model`) then uses the right distance."""
import pytest

from dl4smlm.checkpoint import load_checkpoint, load_model
from dl4smlm.data import SimulatedDataset
from dl4smlm.distill import _distance, hint_training, knowledge_transfer, save_student
from dl4smlm.losses import L1L2Loss
from dl4smlm.models import get_model
from dl4smlm.simulate import SimulationConfig

FAST = dict(batch_size=4, lr=1e-3, device="cpu", progress=False, seed=0)


@pytest.fixture(scope="module")
def data():
    cfg = SimulationConfig(height=24, width=24, density=3.0)
    return SimulatedDataset(cfg, 8, seed=1, upsampling=2, patch_size=8, min_emitters=1)


@pytest.mark.parametrize("distance, lam", [("mse", None), (L1L2Loss(lam=3.0), 3.0)])
def test_knowledge_transfer_records_its_distance(data, tmp_path, distance, lam):
    teacher = get_model("srcnn", upsampling=2, seed=0)
    teacher.normalizer = data.normalizer
    run = knowledge_transfer("srcnn", teacher, data, epochs=1, eta=1.0, distance=distance, **FAST)
    path = save_student(run, tmp_path / "s.pt", data)
    spec = load_checkpoint(path)["loss"]
    assert spec["name"] == ("mse" if lam is None else "l1l2") and spec.get("kwargs", {}).get("lam") == lam
    again = _distance(None, load_model(path), data)   # the student as the next teacher
    assert (again is None) if lam is None else (isinstance(again, L1L2Loss) and again.lam == lam)


def test_hint_training_records_its_task_loss(data, tmp_path):
    teacher = get_model("deep-storm", 2, seed=3).eval()
    teacher.normalizer = data.normalizer
    run = hint_training("srcnn", teacher, data, guided="mapping", hint="dec2", hint_epochs=1, epochs=1, loss="wmse",
                        attentive=False, **FAST)
    spec = load_checkpoint(save_student(run, tmp_path / "h.pt", data))["loss"]
    assert spec["name"] == "wmse"
    assert _distance(None, load_model(tmp_path / "h.pt"), data) is None   # weighted losses: the MSE, not L1L2
