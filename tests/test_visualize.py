"""Figures and lab controls of dl4smlm.visualize, driven headless: bad input, the CLI's call, widgets set from code."""
import math
import re

import numpy as np
import pandas as pd
import pytest
from fastcore.test import test_close as assert_close
from fastcore.test import test_eq as assert_eq

from dl4smlm.data import ImageDataset
from dl4smlm.localize import predict
from dl4smlm.simulate import render_heatmap, render_spikes, simulate
from dl4smlm.checkpoint import load_model
from dl4smlm.train import Trainer
from dl4smlm.visualize import (loss_explorer, loss_view, model_explorer, model_view, output_sparsity, plot_intensity_histograms,
                               plot_localization_errors, plot_prediction, plot_training, simulation_explorer, simulation_view)


@pytest.fixture(scope="module")
def sim():
    return simulate(frames=3, height=24, width=24, density=3.0, seed=5, workers=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, sim):
    "A tiny SRCNN (×2) trained for one epoch of two steps: enough to have a checkpoint and a history."
    data = ImageDataset(sim.frames, localizations=sim.ground_truth, upsampling=2, patch_size=8, min_emitters=1,
                        patches_per_frame=2, seed=0)
    trainer = Trainer("srcnn", "l1l2", data, None, epochs=1, batch_size=4, early_stopping=None, device="cpu", progress=False)
    trainer.fit()
    return trainer.save(tmp_path_factory.mktemp("ck") / "tiny.pt", resume=False)


def _truth_heatmap(sim, frame, f):
    gt = sim.ground_truth[sim.ground_truth["frame"] == frame + 1].assign(frame=1)
    c = sim.config
    return render_heatmap(render_spikes(gt, 1, c.height, c.width, c.pixel_nm, f))[0]


def test_plot_prediction_panels_overlay_and_shared_scale(sim):
    heat = 0.5 * _truth_heatmap(sim, 1, 4)                          # a "prediction": half the target
    gt = sim.ground_truth[sim.ground_truth["frame"] == 2]
    locs = gt.assign(**{"x [nm]": gt["x [nm]"] + 10.0})[["frame", "x [nm]", "y [nm]"]]
    fig = plot_prediction(sim, heat, 1, localizations=locs)
    images = fig.axes[:3]
    assert_eq([len(ax.images) for ax in images], [1, 1, 1])
    assert_eq(images[1].images[0].get_clim(), images[2].images[0].get_clim())
    assert_close(images[1].images[0].get_clim()[1], float(2 * heat.max()), eps=1e-4)   # the scale fits the brighter map
    assert_eq(len(images[2].collections[0].get_offsets()), len(gt))                       # circles
    assert_close(np.asarray(images[2].collections[1].get_offsets())[:, 0], locs["x [nm]"].to_numpy(), eps=1e-9)
    assert all(ax.get_xlabel() == "x [nm]" and ax.get_ylabel() == "y [nm]" for ax in images)
    bars = [a for ax in images for a in ax.artists]
    assert len(bars) == 3 and all(("nm" in b.txt_label.get_text() or "µm" in b.txt_label.get_text()) for b in bars)
    assert fig.dpi >= 100                                                        # readable in the book
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"                  # shows itself in a notebook without pyplot


def test_plot_prediction_as_the_cli_calls_it(sim):
    "The CLI's demo passes (sim, heat map, upsampling=f) like its draft `demo_figure`, optionally zoomed."
    heat = _truth_heatmap(sim, 0, 4)
    fig = plot_prediction(sim, heat, upsampling=4)
    assert_eq(len(fig.axes), 5)
    fig = plot_prediction(sim, heat, 0, 4, 1.2)                     # positional zoom_um, as demo_figure's
    assert_close(fig.axes[1].get_xlim(), (600, 1800), eps=1e-9)
    assert_close(fig.axes[0].get_xlim(), (0, 2400), eps=1e-9)     # the camera frame stays whole, the zoom marked
    assert_eq(len(fig.axes[0].patches), 1)


def test_plot_prediction_with_a_prediction_of_one_frame(sim, checkpoint):
    net = load_model(checkpoint)
    one = predict(net, sim.frames[2], net.normalizer, threshold=0.0, device="cpu", progress=False)
    fig = plot_prediction(sim, one, frame=2, overlay=True)
    assert_eq(len(fig.axes[2].collections[1].get_offsets()), len(one.localizations))
    fig = plot_prediction(sim, one, frame=2, overlay=False, shared_scale=False)
    assert_eq(sum(len(ax.collections) for ax in fig.axes[:3]), 0)
    assert_eq(len(fig.axes), 6)                                     # one colour bar per image


@pytest.mark.parametrize("call, message", [
    (lambda s: plot_prediction(s, np.zeros((48, 47))), "heat map of one 24×24-px frame"),
    (lambda s: plot_prediction(s, np.zeros((96, 96)), upsampling=2), "(2·24, 2·24)"),
    (lambda s: plot_prediction(s, None, frame=3), "frame: expected a 0-based frame index in [0, 3)"),
    (lambda s: plot_prediction(s, None, frame=True), "frame: expected"),
    (lambda s: plot_prediction(s, None, zoom_um=0), "zoom_um"),
    (lambda s: plot_prediction(s.frames), "sim: expected a Simulation"),
])
def test_plot_prediction_bad_input(sim, call, message):
    with pytest.raises(ValueError, match=re.escape(message)): call(sim)


def test_plot_prediction_refuses_a_prediction_of_several_frames(sim, checkpoint):
    net = load_model(checkpoint)
    two = predict(net, sim.frames[:2], net.normalizer, device="cpu", progress=False)
    with pytest.raises(ValueError, match="Prediction of one frame"): plot_prediction(sim, two)


def test_plot_training_from_checkpoint_history_and_dict(checkpoint):
    from dl4smlm.checkpoint import load_checkpoint
    from dl4smlm.train import History
    h = load_checkpoint(checkpoint)["history"]
    for source in (checkpoint, h, History.from_dict(h)):
        fig = plot_training(source)
        assert_eq(list(fig.axes[0].lines[0].get_xdata()), [1])
        assert_eq(fig.axes[1].get_ylabel(), "learning rate")
    with pytest.raises(FileNotFoundError): plot_training(checkpoint.parent / "missing.pt")
    with pytest.raises(ValueError, match="no epoch recorded"): plot_training(History())


def test_plot_intensity_histograms_common_bins_and_given_axes():
    from matplotlib.figure import Figure
    target = np.zeros((10, 10)); target[5, 5] = 16.0
    prediction = np.full((10, 10), 0.5)
    fig = Figure(); ax = fig.subplots()
    assert plot_intensity_histograms(prediction, target, bins=4, ax=ax) is fig
    assert_eq(ax.get_yscale(), "log")
    assert_eq(ax.get_legend_handles_labels()[1], ["target (100 px)", "prediction (100 px)"])
    assert ax.get_xlim()[0] <= 0 and ax.get_xlim()[1] >= 16                 # the bins span both images
    with pytest.raises(ValueError, match="non-empty"): plot_intensity_histograms(np.zeros(0), target)


def test_plot_localization_errors_known_shift_rmse_and_crlb():
    gt = pd.DataFrame({"frame": [1, 1, 2, 2], "x [nm]": [1000.0, 3000.0, 1000.0, 3000.0], "y [nm]": [1000.0, 1000.0, 2000.0, 2000.0]})
    locs = gt.assign(**{"x [nm]": gt["x [nm]"] + 10.0, "y [nm]": gt["y [nm]"] - 5.0})
    locs = pd.concat([locs, pd.DataFrame({"frame": [1], "x [nm]": [5000.0], "y [nm]": [5000.0]})], ignore_index=True)   # unmatched
    fig = plot_localization_errors(gt, locs, crlb_nm=4.0)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert_eq(labels, ["4 matched", f"RMSE {math.sqrt(125):.1f} nm", "mean (10.0, -5.0) nm", f"CRLB {4 * math.sqrt(2):.1f} nm"])
    assert_close(np.asarray(fig.axes[0].collections[0].get_offsets()), np.tile([10.0, -5.0], (4, 1)), eps=1e-9)
    per_row = np.array([1.0, 1.0, 7.0, 7.0])                        # per-row bounds: RMS over the matched rows
    labels = plot_localization_errors(gt, locs, crlb_nm=per_row).axes[0].get_legend_handles_labels()[1]
    assert_eq(labels[-1], f"CRLB {math.sqrt(2 * 25):.1f} nm")
    assert_eq(plot_localization_errors(gt, locs).axes[0].get_legend_handles_labels()[1][-1], "mean (10.0, -5.0) nm")
    with pytest.raises(ValueError, match="one per ground-truth row"): plot_localization_errors(gt, locs, crlb_nm=[1.0, 2.0])
    empty = plot_localization_errors(gt, locs.assign(frame=9))       # nothing matches: an empty scatter, no circles
    assert_eq(len(empty.axes[0].patches), 0)


def test_output_sparsity():
    h = np.zeros((16, 16)); h[4, 4] = 10.0; h[10, 10] = 6.0; h[0, 0] = 0.05; h[1, 1] = -0.5
    s = output_sparsity(h)
    assert_eq((s["near_zero_pct"], s["peaks"]), (100 * (1 - 3 / 256), 2))
    assert_close(s["l1"], 16.55, eps=1e-5)
    assert_eq(output_sparsity(h, tol=1.0, threshold=8.0)["peaks"], 1)
    with pytest.raises(ValueError, match="one non-empty"): output_sparsity(np.zeros((0, 4)))


def test_simulation_explorer_follows_its_controls():
    w = simulation_explorer(size=24)
    assert_eq(w.result.crlb_nm, simulation_view(size=24).crlb_nm)
    w.controls["background"].value = 150.0
    assert_eq(w.result.simulation.config.background, 150.0)
    assert w.result.crlb_nm > simulation_view(size=24).crlb_nm             # more background, worse bound
    w.controls["sigma_nm"].value = 200.0
    assert_eq(w.result.simulation.config.sigma_nm, 200.0)
    w.controls["camera"].value = "scmos"
    assert_eq(w.result.simulation.config.camera, "scmos")
    before = len(w.result.simulation.ground_truth)
    w.controls["density"].value = 8.0
    assert len(w.result.simulation.ground_truth) > before
    assert_eq(w.result.simulation.frames.shape, (1, 24, 24))
    assert_eq(len(w.result.figure.axes[0].images), 1)
    assert "CRLB" in w.result.figure._suptitle.get_text()


def test_model_explorer_follows_its_controls(sim, checkpoint):
    w = model_explorer([checkpoint], sim, threshold=0.0)
    assert_eq(list(w.controls["model"].options), [(checkpoint.name, checkpoint)])
    assert_eq(w.result.metrics, model_view(checkpoint, sim, 0, 0.0).metrics)
    w.controls["frame"].value = 2
    assert_eq(set(w.result.prediction.localizations["frame"]), {3} if len(w.result.prediction.localizations) else set())
    assert_eq(w.result.metrics["n_ground_truth"], model_view(checkpoint, sim, 2, 0.0).metrics["n_ground_truth"])
    n0 = len(w.result.prediction.localizations)
    top = float(w.result.prediction.localizations["peak [a.u.]"].median()) if n0 else 1.0
    w.controls["threshold"].value = round(top * 2) / 2 + 0.5
    assert len(w.result.prediction.localizations) < max(n0, 1)
    assert (w.result.prediction.localizations["peak [a.u.]"] > w.controls["threshold"].value).all()
    assert_eq(w.controls["frame"].max, 2)
    with pytest.raises(ValueError, match="at least one"): model_explorer([], sim)
    with pytest.raises(ValueError, match="normalizer"):
        from dl4smlm.models import get_model
        model_view(get_model("srcnn", 2), sim)


def test_loss_explorer_caches_and_responds():
    a = loss_view("l1l2", 1.0, epochs=1)
    assert loss_view("l1l2", 1.0, epochs=1).output is a.output          # trained once per setting
    assert_eq(a.output.shape, (128, 128))
    assert not a.output.flags.writeable
    w = loss_explorer(epochs=1)
    assert w.result.output is a.output
    w.controls["lam"].value = 0.01                                      # a much stronger L1 term: a much smaller output
    assert w.result.sparsity["l1"] < a.sparsity["l1"]
    w.controls["loss"].value = "wmae"
    assert w.result.output is loss_view("wmae", 0.01, epochs=1).output
    assert_eq(w.result.target_sparsity, a.target_sparsity)
    with pytest.raises(ValueError, match="loss: expected one of"): loss_view("mse", 1.0)


def test_explorer_shows_the_figure_and_reports_errors_under_it(sim, checkpoint, tmp_path):
    "The figure is a PNG image widget; a failing update leaves the last good result and shows the error."
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    w = model_explorer({"good": checkpoint, "broken": bad}, sim, threshold=0.0)
    image, text = w.children[1], w.children[2]
    assert bytes(image.value[:8]) == b"\x89PNG\r\n\x1a\n" and len(image.value) > 1000
    assert w.error is None and text.value.startswith("tp ")
    good = w.result
    w.controls["model"].value = bad
    assert w.result is good and type(w.error).__name__ == "CheckpointError"
    assert text.value.startswith("<b>error:</b> CheckpointError") and "broken.pt" in text.value
    w.controls["model"].value = checkpoint                               # a good setting clears the error
    assert w.error is None and w.result is not good
    with pytest.raises(Exception, match="broken.pt"): model_explorer({"broken": bad}, sim)   # the first view raises
