"""dl4smlm.localize: peaks of ideal heat maps land on the truth, tiled prediction equals untiled prediction,
stacks are streamed, rendering conserves localizations, bad input is refused with clear errors."""
import numpy as np
import pandas as pd
import pytest
import torch
from fastcore.test import test_close as assert_close, test_eq as assert_eq
from scipy.spatial import cKDTree
from torch import nn

from dl4smlm.io import read_stack, write_stack
from dl4smlm.tables import read_localizations
from dl4smlm.localize import (FlipAverage, Prediction, find_peaks, localize_heatmaps, predict, refine_peaks, render_gaussian,
                              render_histogram, tiled_forward)
from dl4smlm.models import get_model
from dl4smlm.simulate import render_heatmap, render_spikes


def isolated_emitters(n_side, spacing_nm, frames, seed):
    "Molecules on a grid `spacing_nm` apart, jittered by up to a third of the spacing, spread over `frames`."
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(n_side), np.arange(n_side))
    j = spacing_nm / 3
    return pd.DataFrame({"frame": np.arange(gx.size) % frames + 1,
                         "x [nm]": (gx.ravel() + 0.5) * spacing_nm + rng.uniform(-j, j, gx.size),
                         "y [nm]": (gy.ravel() + 0.5) * spacing_nm + rng.uniform(-j, j, gx.size)})


def nearest_errors(truth, locs):
    "Position error of each localization from its nearest molecule of the same frame, and which molecule."
    key = lambda t: t[["x [nm]", "y [nm]"]].to_numpy() + 1e7 * t[["frame"]].to_numpy()
    _, k = cKDTree(key(truth)).query(key(locs))
    return locs[["x [nm]", "y [nm]"]].to_numpy() - truth[["x [nm]", "y [nm]"]].to_numpy()[k], k


@pytest.mark.parametrize("f, pixel_nm, method", [(8, 100.0, "cog"), (4, 110.0, "cog"), (8, 160.0, "gaussian"), (2, 100.0, "none")])
def test_ideal_heatmap_recovers_positions_within_the_grid(f, pixel_nm, method):
    truth = isolated_emitters(14, 5 * pixel_nm, 3, seed=f)
    size = int(14 * 5)
    maps = render_heatmap(render_spikes(truth, 3, size, size, pixel_nm, f))
    locs = localize_heatmaps(maps, f, pixel_nm, method=method)
    err, k = nearest_errors(truth, locs)
    assert_eq(np.sort(k), np.arange(len(truth)))                 # every molecule once, nothing else
    q = pixel_nm / f
    assert np.abs(err).max() <= q / 2 + 1e-6                     # within the quantisation of the grid
    # no half-pixel offset: the mean signed error is 0 within 4 standard errors (q/√12/√n)
    assert np.abs(err.mean(0)).max() < 4 * q / np.sqrt(12) / np.sqrt(len(err))
    assert_eq(locs["frame"].tolist(), sorted(locs["frame"].tolist()))
    assert_eq(locs["id"].tolist(), list(range(1, len(locs) + 1)))


def test_centre_convention_on_hand_built_maps():
    m = torch.zeros(2, 16, 16)
    m[0, 0, 0] = m[1, 5, 9] = 10.0
    locs = localize_heatmaps(m, upsampling=4, pixel_nm=100.0, threshold=1.0)
    # fine pixel (i, j) is centred at ((j + 0.5)·q, (i + 0.5)·q), q = 25 nm
    assert_eq(locs[["frame", "x [nm]", "y [nm]"]].values.tolist(), [[1, 12.5, 12.5], [2, 237.5, 137.5]])
    assert_eq(localize_heatmaps(m, 4, threshold=1.0, first_frame=11)["frame"].tolist(), [11, 12])


def test_gaussian_fit_is_exact_for_sampled_gaussians_and_cog_is_biased_inward():
    rng = np.random.default_rng(3)
    true = rng.uniform(5, 27, (30, 2))
    rows, cols = np.mgrid[0:32, 0:32] + 0.5
    blobs = np.stack([10 * np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.3 ** 2)) for r, c in true])
    b, i, j, _ = find_peaks(blobs, 1.0)
    assert_eq(b.tolist(), list(range(30)))
    for method in ("gaussian", "cog"):
        di, dj, _ = refine_peaks(blobs, b, i, j, method=method)
        est = np.c_[i.numpy() + 0.5 + di.numpy(), j.numpy() + 0.5 + dj.numpy()]
        off = true - (np.floor(true) + 0.5)
        if method == "gaussian": assert_close(est, true, eps=1e-4)
        else: assert (np.abs(est - true) <= np.abs(off) + 1e-6).all()   # pulled towards the pixel centre, never past the truth


def test_radius_two_and_negative_background():
    m = torch.full((1, 20, 20), -1.0)
    m[0, 10, 10], m[0, 10, 12] = 8.0, 6.0                   # 2 px apart: one peak at radius 2, two at radius 1
    assert_eq(len(find_peaks(m, 0.0, radius=1)[0]), 2)
    assert_eq(len(find_peaks(m, 0.0, radius=2)[0]), 1)
    di, dj, total = refine_peaks(m, *find_peaks(m, 0.0, radius=2)[:3], radius=2)
    assert_close(total.item(), 14.0, eps=1e-6)               # negative values do not count
    assert_close(dj.item(), 2 * 6 / 14, eps=1e-6)


def test_empty_maps_give_an_empty_table_with_the_columns():
    locs = localize_heatmaps(np.zeros((3, 8, 8), np.float32), 8)
    assert_eq(len(locs), 0)
    assert {"id", "frame", "x [nm]", "y [nm]", "intensity [a.u.]", "peak [a.u.]"} <= set(locs.columns)


@pytest.mark.parametrize("call, message", [
    (lambda: find_peaks(np.zeros((2, 3, 4, 5))), "shape (2, 3, 4, 5)"),
    (lambda: find_peaks(np.zeros((4, 4)), radius=1.5), "radius"),
    (lambda: refine_peaks(np.zeros((1, 4, 4)), *find_peaks(np.zeros((1, 4, 4)))[:3], method="fit"), "method"),
    (lambda: localize_heatmaps(np.zeros((1, 4, 4)), upsampling=0), "upsampling"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")): call()


class LocalConv(nn.Module):
    "A tiny fully convolutional model with a known receptive field: ×f nearest upsampling then two 5×5 convs."
    def __init__(self, f=2):
        super().__init__()
        self.f = f
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.body = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 1, 5, padding=2))
    def forward(self, x): return self.body(nn.functional.interpolate(x, scale_factor=self.f, mode="nearest"))


@pytest.mark.parametrize("H, W, tile, overlap, align", [(40, 40, 16, 4, 8), (37, 53, 24, 4, 8), (64, 20, 32, 8, 8),
                                                        (9, 9, 6, 2, 2), (5, 70, 16, 2, 4), (21, 19, 9, 3, 1)])
def test_tiling_equals_untiled_for_a_simple_conv_model(H, W, tile, overlap, align):
    model = LocalConv().eval()                                 # receptive field: 4 fine px = 2 camera px
    x = torch.randn(3, 1, H, W, generator=torch.Generator().manual_seed(H))
    with torch.inference_mode():
        whole = tiled_forward(model, x, tile=512, overlap=0, align=align)
        tiled = tiled_forward(model, x, tile=tile, overlap=overlap, batch_size=4, align=align)
    assert_eq(tuple(tiled.shape), (3, 2 * H, 2 * W))
    assert_close(tiled, whole, eps=1e-5)


@pytest.mark.parametrize("name, f", [("deep-storm", 4), ("fid-storm", 4)])
def test_tiled_prediction_equals_untiled_for_real_models(name, f):
    model = get_model(name, upsampling=f, seed=1).eval()
    x = torch.randn(1, 1, 46, 54, generator=torch.Generator().manual_seed(2))   # padded to 48×56
    with torch.inference_mode():
        whole = tiled_forward(model, x, tile=64)
        tiled = (tiled_forward(model, x, tile=40, overlap=14, batch_size=3) if name == "fid-storm" else
                 tiled_forward(model, x, tile=32, overlap=8, batch_size=3))
    assert_close(tiled, whole, eps=1e-5 * whole.abs().max().item())


def test_tiling_refuses_bad_settings_and_bad_models():
    x = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="multiple of align"): tiled_forward(LocalConv(), x, tile=12)
    with pytest.raises(ValueError, match="overlap"): tiled_forward(LocalConv(), x, tile=16, overlap=5)
    with pytest.raises(ValueError, match="overlap"): tiled_forward(LocalConv(), x, tile=16, overlap=-1)
    with pytest.raises(ValueError, match=r"\(n, 1, height, width\)"): tiled_forward(LocalConv(), x[0])
    with pytest.raises(ValueError, match="model: expected"): tiled_forward(nn.AvgPool2d(2), torch.zeros(1, 1, 8, 8))


class CountingStack:
    "An array-like stack that records which slices are read (to check that predict streams)."
    def __init__(self, a): self.a, self.reads = a, []
    @property
    def shape(self): return self.a.shape
    def __len__(self): return len(self.a)
    def __getitem__(self, key):
        self.reads.append(key)
        return self.a[key]
    def __array__(self, *args, **kw): raise AssertionError("the whole stack was read at once")


def test_predict_streams_the_stack_and_matches_whole_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.poisson(50, (7, 24, 32)).astype(np.uint16)      # multiples of 8 px: no padding
    model = LocalConv()
    norm = lambda x: (x - 50) / 7
    stack = CountingStack(frames)
    pred = predict(model, stack, norm, pixel_nm=120.0, threshold=0.0, tile=16, overlap=4, batch_size=4, progress=False)
    assert len(stack.reads) > 1 and all(isinstance(k, slice) and k.stop - k.start <= 1 for k in stack.reads)
    assert isinstance(pred, Prediction)
    assert_eq((pred.upsampling, pred.n_frames, pred.pixel_nm), (2, 7, 120.0))
    assert_eq(pred.super_resolution.shape, (48, 64)); assert_eq(pred.super_resolution.dtype, np.float32)
    assert_close(pred.field_nm, (32 * 120.0, 24 * 120.0), eps=1e-9)
    with torch.inference_mode():
        maps = model(norm(torch.as_tensor(frames, dtype=torch.float32)[:, None]))[:, 0]
    assert_close(pred.super_resolution, maps.sum(0).numpy(), eps=1e-3)
    ref = localize_heatmaps(maps, 2, 120.0, threshold=0.0)
    assert_eq(len(pred.localizations), len(ref))
    assert_close(pred.localizations[["frame", "x [nm]", "y [nm]"]].to_numpy(), ref[["frame", "x [nm]", "y [nm]"]].to_numpy(), eps=1e-6)
    assert_eq(pred.localizations["id"].tolist(), list(range(1, len(ref) + 1)))
    # from a memory-mapped TIFF, and a single 2-D frame
    write_stack(tmp_path/"f.tif", frames)
    mm = read_stack(tmp_path/"f.tif")
    again = predict(model, mm, norm, pixel_nm=120.0, threshold=0.0, batch_size=3, progress=False)
    assert_close(again.super_resolution, pred.super_resolution, eps=1e-3)
    tensor = predict(model, torch.as_tensor(frames.astype(np.float32)), norm, pixel_nm=120.0, threshold=0.0, progress=False)
    assert_close(tensor.super_resolution, pred.super_resolution, eps=1e-3)
    single = predict(model, frames[2], norm, threshold=0.0, progress=False)
    assert_eq(single.n_frames, 1); assert_eq(set(single.localizations["frame"]), {1})


def test_predict_keeps_the_model_mode_and_refuses_bad_stacks():
    model = LocalConv().train()
    predict(model, np.zeros((2, 8, 8), np.float32), progress=False)
    assert model.training
    with pytest.raises(ValueError, match=r"\(frames, height, width\)"): predict(model, np.zeros((2, 3, 8, 8)), progress=False)
    with pytest.raises(ValueError, match=r"\(frames, height, width\)"): predict(model, np.zeros((0, 8, 8)), progress=False)


def test_prediction_renders_and_writes_a_thunderstorm_table(tmp_path):
    from dl4smlm.tables import write_localizations
    pred = predict(LocalConv(), np.random.default_rng(1).normal(size=(3, 16, 16)).astype(np.float32), threshold=0.5, progress=False)
    assert_eq(pred.render().shape, pred.super_resolution.shape)     # default: the fine grid
    assert_eq(pred.render(pixel_nm=10, method="histogram").sum(), len(pred.localizations))
    with pytest.raises(ValueError, match="method"): pred.render(method="points")
    write_localizations(tmp_path/"l.csv", pred.localizations)
    back = read_localizations(tmp_path/"l.csv")
    assert_close(back[["x [nm]", "y [nm]"]].to_numpy(), pred.localizations[["x [nm]", "y [nm]"]].to_numpy(), eps=1e-6)
    assert "peak [a.u.]" in back.columns


def test_rendering_conserves_localizations():
    rng = np.random.default_rng(4)
    n = 500
    t = pd.DataFrame({"x [nm]": rng.uniform(100, 1900, n), "y [nm]": rng.uniform(100, 900, n)})
    h = render_histogram(t, (2000, 1000), 20)
    assert_eq(h.shape, (50, 100)); assert_eq(h.sum(), n)
    widths = rng.uniform(5, 25, n)
    g = render_gaussian(t, (2000, 1000), 20, sigma_nm=widths)                    # one width per localization
    assert_close(g.sum(), n, eps=1e-2)
    parts = sum(render_gaussian(t.iloc[k:k + 1], (2000, 1000), 20, sigma_nm=widths[k]) for k in range(0, n, 50))
    assert_close(render_gaussian(t.iloc[::50], (2000, 1000), 20, sigma_nm=widths[::50]), parts, eps=1e-5)
    wide = render_gaussian(t.iloc[:3], (2000, 1000), 20, sigma_nm=[5.0, 5.0, 2000.0])   # one very wide: still right
    assert_close(wide.sum(), 2 + render_gaussian(t.iloc[2:3], (2000, 1000), 20, sigma_nm=2000.0).sum(), eps=1e-4)
    # each Gaussian is centred on its localization
    one = render_gaussian(t.iloc[:1], (2000, 1000), 20, sigma_nm=15)
    r, c = np.mgrid[0:50, 0:100] + 0.5
    assert_close([(one * c).sum() * 20, (one * r).sum() * 20], t.iloc[0].to_list(), eps=1e-2)
    assert_eq(render_gaussian(t.iloc[:0], (2000, 1000), 20).sum(), 0)
    assert_eq(render_histogram(t, (2005, 1000), 10).shape, (100, 201))            # a partial pixel counts
    with pytest.raises(ValueError, match="'x \\[nm\\]'"): render_histogram(t.rename(columns={"x [nm]": "x"}), (10, 10))
    with pytest.raises(ValueError, match="pixel_nm"): render_histogram(t, (10, 10), 0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    "A checkpoint of FID-STORM at f = 4 after one short epoch (110 nm pixels), written by dl4smlm.train."
    from dl4smlm.data import ImageDataset
    from dl4smlm.simulate import SimulationConfig, simulate
    from dl4smlm.train import Trainer
    path = tmp_path_factory.mktemp("ck") / "fid.pt"
    sim = simulate(SimulationConfig(frames=6, height=16, width=16, density=2.0, pixel_nm=110.0, seed=0))
    data = ImageDataset(sim.frames, localizations=sim.ground_truth, upsampling=4, pixel_nm=110.0, patch_size=8,
                        min_emitters=1, patches_per_frame=2)
    train, valid, _ = data.split(valid=0.3, test=0.0, seed=0)
    Trainer("fid-storm", "l1l2", train, valid, epochs=1, batch_size=4, progress=False, out=path).fit()
    return path, sim


def test_predict_checkpoint_uses_the_checkpoint_settings(checkpoint, monkeypatch):
    import dl4smlm.predict as pr
    from dl4smlm.checkpoint import load_model
    path, sim = checkpoint
    pred = pr.predict_checkpoint(path, sim.frames, threshold=0.0, progress=False)
    assert_eq((pred.pixel_nm, pred.upsampling, pred.n_frames), (110.0, 4, 6))
    model = load_model(path)
    ref = predict(model, sim.frames, model.normalizer, pixel_nm=110.0, threshold=0.0, progress=False)
    assert_close(pred.super_resolution, ref.super_resolution, eps=1e-4 * np.abs(ref.super_resolution).max())   # batch norm folded
    seen = {}
    monkeypatch.setattr(pr, "predict", lambda *a, **kw: seen.update(kw))
    with pytest.raises(ValueError, match="trained on 110 nm pixels"):                # 9 % apart: refused before any compute
        pr.predict_checkpoint(path, sim.frames, pixel_nm=100.0)
    assert_eq(seen, {})
    with pytest.warns(UserWarning, match="forced"):
        pr.predict_checkpoint(path, sim.frames, pixel_nm=100.0, force_pixel_size=True)
    assert_eq((seen["threshold"], seen["pixel_nm"]), (pr.DEFAULT_THRESHOLD, 100.0))
    pr.predict_checkpoint(path, sim.frames, pixel_nm=113.0)                        # within 5 %: the stack's own size is used
    assert_eq(seen["pixel_nm"], 113.0)
    monkeypatch.setattr(pr, "load_checkpoint", lambda p: {"target": {"kind": "spikes"}, "pixel_nm": None})
    pr.predict_checkpoint(path, sim.frames)
    assert_close(seen["threshold"], pr.DEFAULT_THRESHOLD / 15.9241, eps=1e-4)    # scaled to a spike's peak of 1
    assert_eq(seen["pixel_nm"], 100.0)                                           # no pixel size stored: 100 nm


def test_predict_to_folder_writes_the_three_files(checkpoint, tmp_path):
    from dl4smlm.predict import PREDICT_FILES, predict_to_folder
    path, sim = checkpoint
    write_stack(tmp_path / "frames.tif", sim.frames)
    out = tmp_path / "new" / "prediction"
    pred = predict_to_folder(path, tmp_path / "frames.tif", out, threshold=0.0, batch_size=2, progress=False)
    assert_eq(sorted(p.name for p in out.iterdir()), sorted(PREDICT_FILES))        # nothing else, no temporary files
    back = read_localizations(out / "localizations.csv")
    assert_eq(len(back), len(pred.localizations))
    assert_close(back[["frame", "x [nm]", "y [nm]"]].to_numpy(), pred.localizations[["frame", "x [nm]", "y [nm]"]].to_numpy(), eps=1e-6)
    sr = read_stack(out / "super_resolution.tif", mmap=False, allow_single_frame=True)
    assert_close(sr[0], pred.super_resolution, eps=1e-6)
    import matplotlib.image
    assert_eq(matplotlib.image.imread(out / "super_resolution.png").shape[:2], (512, 512))
    again = predict_to_folder(path, tmp_path / "frames.tif", out, threshold=1e9, progress=False)   # replaces; empty table is fine
    assert_eq(len(again.localizations), 0); assert_eq(len(read_localizations(out / "localizations.csv")), 0)
    with pytest.raises(FileNotFoundError, match="missing.pt"): predict_to_folder(tmp_path / "missing.pt", tmp_path / "frames.tif", out)


class _ShiftedUpsampler(nn.Module):
    "A stand-in network with a learned-looking bias: nearest ×4, then shifted by (dy, dx) fine pixels."
    def __init__(self, dy, dx): super().__init__(); self.shift = (dy, dx)
    def forward(self, x): return torch.roll(nn.functional.interpolate(x, scale_factor=4), self.shift, (-2, -1))

@pytest.mark.parametrize("dy, dx", [(1, 1), (0, 1), (-1, 0)])   # shifts small against the 4-pixel spot, as learned ones are
def test_flip_average_cancels_a_shift(dy, dx):
    frames = np.zeros((2, 16, 24), np.float32)
    frames[0, 5, 7] = frames[1, 10, 15] = 10.0                     # one bright pixel per frame: molecules at pixel centres
    plain = predict(_ShiftedUpsampler(dy, dx), frames, pixel_nm=100.0, threshold=0.5, radius=3, device="cpu", progress=False)
    flips = predict(_ShiftedUpsampler(dy, dx), frames, pixel_nm=100.0, threshold=0.5, radius=3, device="cpu", progress=False,
                    flip_average=True)
    truth = np.array([[750.0, 550.0], [1550.0, 1050.0]])            # (x, y) nm of the pixel centres
    assert_close(plain.localizations[["x [nm]", "y [nm]"]].to_numpy(), truth + 25.0 * np.array([dx, dy]), eps=1e-3)
    assert_close(flips.localizations[["x [nm]", "y [nm]"]].to_numpy(), truth, eps=1e-3)
    assert_eq(flips.upsampling, 4)

def test_flip_average_keeps_the_model_attributes():
    net = get_model("fid-storm", upsampling=4, seed=0).eval()
    net.normalizer = "kept"
    avg = FlipAverage(net)
    assert (avg.name, avg.upsampling, avg.normalizer) == ("fid-storm", 4, "kept")
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert_close(avg(x.flip(-2)), avg(x).flip(-2), eps=1e-4)         # mirror-symmetric by construction


@pytest.mark.parametrize("name", ["fid-storm-x4-emccd", "deep-storm-x4-emccd"])
def test_symmetric_model_through_the_whole_pipeline_has_no_bias(name):
    """A model made symmetric (averaged over the four flips) localizes a set of frames closed under flips: its errors on a frame
    and on its mirror image cancel, so any mean error left is an offset of the pipeline itself (normaliser, the model's own
    upsampling, peak finding, the pixel-centre convention, assessment). It must be < 0.5 nm."""
    from dl4smlm.evaluate import assess
    from dl4smlm.localize import predict
    from dl4smlm.simulate import SimulationConfig, simulate
    from dl4smlm.checkpoint import load_model
    model = load_model(name)
    sim = simulate(SimulationConfig(frames=6, height=48, width=48, density=1.0, photons=3000.0, background=10.0, seed=4))
    W = H = 48 * 100.0
    gt, frames = [], []
    for k, (fy, fx) in enumerate(((False, False), (False, True), (True, False), (True, True))):
        f = sim.frames[:, ::-1] if fy else sim.frames
        frames.append(np.ascontiguousarray(f[:, :, ::-1] if fx else f))
        t = sim.ground_truth.copy()
        t["frame"] += 6 * k
        if fx: t["x [nm]"] = W - t["x [nm]"]
        if fy: t["y [nm]"] = H - t["y [nm]"]
        gt.append(t)
    pred = predict(model, np.concatenate(frames), pixel_nm=100.0, threshold=model.calibration["threshold"], flip_average=True,
                   device="cpu", progress=False)
    m = assess(pd.concat(gt, ignore_index=True), pred.localizations, (W, H))
    assert m["jaccard_pct"] > 80 and m["tp"] > 200, m
    assert abs(m["mean_dx_nm"]) < 0.5 and abs(m["mean_dy_nm"]) < 0.5, (m["mean_dx_nm"], m["mean_dy_nm"])
    shifted = pred.localizations.assign(**{"x [nm]": pred.localizations["x [nm]"] + 1.0})   # an offset of 1 nm is seen
    assert abs(assess(pd.concat(gt, ignore_index=True), shifted, (W, H))["mean_dx_nm"] - m["mean_dx_nm"] - 1.0) < 0.05
