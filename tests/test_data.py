"""dl4smlm.data: pairing and its errors, normalisation round trips, aligned augmentation, lazy reading, DataLoader workers."""
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from torch.utils.data import DataLoader

from dl4smlm.data import ImageDataset, SimulatedDataset, dihedral, find_training_data, split_frames
from dl4smlm.normalize import Normalizer
from dl4smlm.io import save_simulation, write_stack
from dl4smlm.tables import write_localizations
from dl4smlm.simulate import SimulationConfig, render_heatmap, render_spikes, simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(SimulationConfig(frames=6, height=32, width=32, density=4.0, seed=11))


def block_sum(a, f):
    "Sum of each f×f block of the last two axes: a target image seen at the frames' pixel size."
    *lead, h, w = a.shape
    return a.reshape(*lead, h // f, f, w // f, f).sum(axis=(-3, -1))


# ---- pairing frames with super-resolved images ----

def write_folder(folder, images, names=None):
    folder.mkdir()
    for i, a in enumerate(images): tifffile.imwrite(folder / (names[i] if names else f"img_{i + 1}.tif"), a)
    return folder


def test_folders_pair_in_natural_order(tmp_path):
    rng = np.random.default_rng(0)
    targets = rng.random((12, 16, 16)).astype(np.float32)
    frames = block_sum(targets, 4)
    # written in an order where a plain sort would pair img_10 with the second frame
    lo = write_folder(tmp_path / "lo", frames)
    hi = write_folder(tmp_path / "hi", targets)
    ds = ImageDataset(lo, hi, patch_size=None, augment=False)
    assert ds.upsampling == 4 and len(ds) == 12
    for k in range(12):
        x, y = ds[k]
        assert torch.equal(y[0], torch.from_numpy(targets[k]))
        assert np.allclose(ds.normalizer.inverse(x[0].numpy()) * np.ptp(frames[k]) + frames[k].min(), frames[k], atol=1e-4)


def test_pairing_errors(tmp_path):
    rng = np.random.default_rng(1)
    lo = write_folder(tmp_path / "lo", rng.random((3, 8, 8)).astype(np.float32))
    hi = write_folder(tmp_path / "hi", rng.random((2, 32, 32)).astype(np.float32))
    with pytest.raises(ValueError, match=r"holds 3 frames but .*hi holds 2 super-resolved images"):
        ImageDataset(lo, hi)
    (tmp_path / "hi" / "img_3.tif").write_bytes(b"")  # an empty file is not a TIFF
    with pytest.raises(ValueError, match="img_3.tif: not a TIFF file"):
        ImageDataset(lo, hi)
    tifffile.imwrite(tmp_path / "hi" / "img_3.tif", np.zeros((30, 32), np.float32))
    with pytest.raises(ValueError, match=r"images of different shapes, img_1.tif is \(32, 32\) but img_3.tif is \(30, 32\)"):
        ImageDataset(lo, hi)
    with pytest.raises(ValueError, match="not one integer multiple"):
        ImageDataset(rng.random((2, 8, 8)), rng.random((2, 32, 24)))
    with pytest.raises(ValueError, match="not one integer multiple"):
        ImageDataset(rng.random((2, 8, 8)), rng.random((2, 20, 20)))
    with pytest.raises(ValueError, match="upsampling: got 8, but"):
        ImageDataset(rng.random((2, 8, 8)), rng.random((2, 32, 32)), upsampling=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no TIFF files"):
        ImageDataset(tmp_path / "empty", hi)
    with pytest.raises(ValueError, match="either `targets`"):
        ImageDataset(rng.random((2, 8, 8)))
    with pytest.raises(ValueError, match=r"expected a \(frames, height, width\) stack"):
        ImageDataset(rng.random((8, 8)), rng.random((32, 32)))


def test_stack_pairs_and_multi_page_files(tmp_path):
    rng = np.random.default_rng(2)
    targets = rng.random((4, 24, 24)).astype(np.float32)
    write_stack(tmp_path / "lo.tif", block_sum(targets, 3))
    write_stack(tmp_path / "hi.tif", targets)
    ds = ImageDataset(tmp_path / "lo.tif", tmp_path / "hi.tif", patch_size=4, min_emitters=0, patches_per_frame=3)
    assert (ds.upsampling, len(ds)) == (3, 12)
    x, y = ds[5]
    assert x.shape == (1, 4, 4) and y.shape == (1, 12, 12)
    write_folder(tmp_path / "stacks", [targets[:2], targets[:2]])  # a 2-frame stack where one image is expected
    with pytest.raises(ValueError, match="expected one 2-D image per file"):
        ImageDataset(tmp_path / "stacks", tmp_path / "stacks")


def test_localization_errors(sim, tmp_path):
    late = sim.ground_truth.assign(frame=sim.ground_truth.frame + 3)
    with pytest.raises(ValueError, match=r"frame numbers run from 4 to 9, but frames holds 6 frames"):
        ImageDataset(sim.frames, localizations=late)
    with pytest.raises(ValueError, match=r"missing columns \['y \[nm\]'\]"):
        ImageDataset(sim.frames, localizations=sim.ground_truth.drop(columns="y [nm]"))
    with pytest.raises(ValueError, match="patch_size: 40 px does not fit"):
        ImageDataset(sim.frames, localizations=sim.ground_truth, patch_size=40)
    with pytest.raises(ValueError, match="indices"):
        ImageDataset(sim.frames, localizations=sim.ground_truth, indices=[0, 6])
    with pytest.raises(ValueError, match="target: expected one of"):
        ImageDataset(sim.frames, localizations=sim.ground_truth, target="blobs")
    with pytest.raises(ValueError, match="pixel_nm"):
        ImageDataset(sim.frames, localizations=sim.ground_truth, pixel_nm=0)
    write_localizations(tmp_path / "locs.csv", sim.ground_truth)
    ds = ImageDataset(sim.frames, localizations=tmp_path / "locs.csv", upsampling=4, patch_size=None, augment=False)
    expected = render_heatmap(render_spikes(sim.ground_truth, 6, 32, 32, 100.0, 4))
    assert np.allclose(torch.stack([ds[k][1][0] for k in range(6)]).numpy(), expected, atol=1e-5)


def test_dataframes_are_checked_like_csv_files(sim):
    gt = sim.ground_truth
    for message, t in (("column 'frame' has 0 in data row 1; ThunderSTORM frames are numbered from 1", gt.assign(frame=gt.frame - 1)),
                       ("ThunderSTORM frames are whole numbers", gt.assign(frame=gt.frame + 0.5)),
                       (r"column 'x \[nm\]' has a missing or non-finite value \(nan\) in data row 3",
                        gt.assign(**{"x [nm]": np.where(np.arange(len(gt)) == 2, np.nan, gt["x [nm]"])}))):
        with pytest.raises(ValueError, match="^localizations: .*" + message): ImageDataset(sim.frames, localizations=t)


# ---- normalisation ----

def test_normalizer_round_trips(sim):
    n = Normalizer.fit(sim.frames)
    x = n(sim.frames)
    assert abs(x.mean()) < 1e-5
    lo, hi = sim.frames.min(axis=(1, 2), keepdims=True), sim.frames.max(axis=(1, 2), keepdims=True)
    assert np.allclose(n.inverse(x), (sim.frames - lo) / (hi - lo), atol=1e-6)
    assert Normalizer.from_dict(n.to_dict()) == n
    assert torch.allclose(n(torch.from_numpy(sim.frames.astype(np.float32))), torch.from_numpy(x), atol=1e-6)
    assert np.array_equal(n(np.full((4, 4), 7, np.uint16)), np.full((4, 4), -n.mean / n.std, np.float32))  # a flat frame
    with pytest.raises(ValueError, match="std"): Normalizer(0.2, -1.0)
    with pytest.raises(ValueError, match="mean"): Normalizer(float("nan"), 1.0)
    with pytest.raises(ValueError, match="'mean' and 'std'"): Normalizer.from_dict({"mean": 1.0})
    with pytest.raises(ValueError, match="frame scaling"): Normalizer.from_dict({"mean": 1.0, "std": 1.0, "frame_scaling": "z"})


def test_dataset_normalises_like_normalizer(sim):
    ds = ImageDataset(sim.frames, localizations=sim.ground_truth, upsampling=2)
    assert ds.normalizer == Normalizer.fit(sim.frames)
    whole = ds.subset(np.arange(6), patch_size=None, augment=False)
    for k in range(6): assert np.array_equal(whole[k][0][0].numpy(), ds.normalizer(sim.frames[k]))
    train, valid, test = ds.split(valid=0.34, test=0.17, seed=3)
    assert train.normalizer == Normalizer.fit(sim.frames[train.indices]) != ds.normalizer
    assert valid.normalizer == test.normalizer == train.normalizer
    given = Normalizer(0.5, 2.0)
    assert ImageDataset(sim.frames, localizations=sim.ground_truth, normalizer=given).split(0.34)[0].normalizer == given


# ---- augmentation keeps frame and target aligned ----

def test_augmentation_keeps_pairs_aligned():
    rng = np.random.default_rng(4)
    targets = rng.random((5, 64, 64)).astype(np.float32) ** 8  # sparse bright points
    frames = block_sum(targets, 4)                              # each frame is its target seen at 4× coarser pixels
    ds = ImageDataset(frames, targets, patch_size=8, min_emitters=0, patches_per_frame=40, augment=True)
    seen = set()
    for k in range(len(ds)):
        x, y = ds[k]
        coarse = block_sum(y[0].numpy(), 4)
        r = np.corrcoef(x[0].numpy().ravel(), coarse.ravel())[0, 1]
        assert r > 0.9999, (k, r)                              # the same picture, up to the affine normalisation
        seen.add(tuple(np.round(x[0, :2, :2].numpy().ravel(), 4)))
    assert len(seen) > 100                                     # patches and symmetries do vary


def test_augmentation_of_localization_targets(sim):
    """Flip a patch, and its target's spikes still sit under the frame's emitters."""
    ds = ImageDataset(sim.frames, localizations=sim.ground_truth, upsampling=4, target="spikes", patch_size=16,
                      min_emitters=3, patches_per_frame=8, augment=True)
    plain = ds.subset(ds.indices, augment=False)
    for k in range(len(ds)):
        (x, y), (x0, y0) = ds[k], plain[k]
        matches = [t for t in range(8) if np.array_equal(dihedral(x0[0].numpy(), t), x[0].numpy())]
        assert matches and all(np.array_equal(dihedral(y0[0].numpy(), t), y[0].numpy()) for t in matches)


def test_dihedral_group():
    a = np.arange(16.0).reshape(4, 4)
    assert {dihedral(a, t).tobytes() for t in range(8)} == {dihedral(dihedral(a, s), t).tobytes() for s in range(8) for t in range(8)}
    assert np.array_equal(dihedral(dihedral(a, 1), 3), a)
    with pytest.raises(ValueError): dihedral(a, -1)


# ---- patches ----

def test_patches_hold_min_emitters(sim):
    ds = ImageDataset(sim.frames, localizations=sim.ground_truth, upsampling=4, target="spikes", patch_size=16,
                      min_emitters=6, patches_per_frame=10, augment=False)
    counts = np.array([ds[k][1].sum().item() for k in range(len(ds))])
    assert (counts >= 6).mean() > 0.9     # the fullest of 20 tries when a frame has no such patch
    ds.set_epoch(1)
    assert not all(torch.equal(ds[k][0], ds.subset(ds.indices, fixed=True)[k][0]) for k in range(5))


def test_split_frames():
    tr, va, te = split_frames(10, valid=0.3, test=0.2, seed=1)
    assert (len(tr), len(va), len(te)) == (5, 3, 2)
    assert sorted(np.concatenate([tr, va, te])) == list(range(10))
    assert [len(v) for v in split_frames(3, valid=0.1, test=0.1)] == [1, 1, 1]   # each fraction > 0 gets a frame
    assert len(split_frames(5, valid=0.0)[1]) == 0
    with pytest.raises(ValueError, match="too few"): split_frames(2, valid=0.3, test=0.3)
    with pytest.raises(ValueError, match="fraction"): split_frames(10, valid=1.2)


# ---- folders ----

def test_find_training_data(sim, tmp_path):
    save_simulation(tmp_path / "sim", sim)
    found = find_training_data(tmp_path / "sim")
    assert [p.name for p in found.values()] == ["frames.tif", "ground_truth.csv", "simulation.json"]
    other = tmp_path / "other"
    other.mkdir()
    write_stack(other / "movie.TIFF", sim.frames)
    with pytest.raises(FileNotFoundError, match="no localization table"): find_training_data(other)
    write_localizations(other / "locs.csv", sim.ground_truth)
    assert find_training_data(other) == {"frames": other / "movie.TIFF", "localizations": other / "locs.csv", "simulation": None}
    write_localizations(other / "more.csv", sim.ground_truth)
    with pytest.raises(ValueError, match="2 files could be the localization table .*locs.csv, more.csv|more.csv, locs.csv"):
        find_training_data(other)
    with pytest.raises(FileNotFoundError, match="no such folder"): find_training_data(tmp_path / "nowhere")
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match="no TIFF stack"): find_training_data(tmp_path / "none")
    (other / "more.csv").unlink()
    with pytest.warns(UserWarning, match="assuming 100 nm"): ds = ImageDataset.from_folder(other, patch_size=None)
    assert ds.metadata["simulation"] is None and ds.pixel_nm == 100.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = ImageDataset.from_folder(tmp_path / "sim", upsampling=2, patch_size=None)
    assert ds.metadata["simulation"]["seed"] == 11 and ds.pixel_nm == 100.0


# ---- lazy reading and workers ----

def test_lazy_reading_and_pickling(sim, tmp_path):
    write_stack(tmp_path / "frames.tif", sim.frames)
    ds = ImageDataset(tmp_path / "frames.tif", localizations=sim.ground_truth)
    assert isinstance(ds._frames._a, np.memmap)
    assert len(pickle.dumps(ds)) < sim.frames.nbytes / 2      # the file name travels, not the frames
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3][0], ds[3][0]) and torch.equal(clone[3][1], ds[3][1])
    write_stack(tmp_path / "packed.tif", sim.frames, compression="zlib")
    packed = ImageDataset(tmp_path / "packed.tif", localizations=sim.ground_truth)
    assert type(packed._frames._a).__name__ == "LazyTiffStack"
    assert torch.equal(packed[7][0], ds[7][0])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_give_the_same_batches(sim, tmp_path, context):
    write_stack(tmp_path / "frames.tif", sim.frames)
    ds = ImageDataset(tmp_path / "frames.tif", localizations=sim.ground_truth, upsampling=2, patch_size=12)
    ds.set_epoch(2)
    ref = [b for b in DataLoader(ds, batch_size=16)]
    got = [b for b in DataLoader(ds, batch_size=16, num_workers=2, multiprocessing_context=context)]
    assert len(ref) == len(got) == 6
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ref, got))


# ---- simulated on the fly ----

def test_simulated_dataset():
    cfg = SimulationConfig(height=24, width=24, density=5.0, seed=2)
    ds = SimulatedDataset(cfg.to_dict(), length=6, upsampling=2, patch_size=16, min_emitters=4, target="spikes")
    x, y = ds[0]
    assert (x.shape, y.shape) == ((1, 16, 16), (1, 32, 32))
    assert torch.equal(ds[0][0], x)
    assert all(ds[k][1].sum() >= 4 for k in range(6))
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0], x)
    again = SimulatedDataset(cfg, length=6, upsampling=2, patch_size=16, min_emitters=4, target="spikes", normalizer=ds.normalizer)
    again.set_epoch(1)
    assert torch.equal(again[0][0], ds[0][0])               # reproducible from the seed
    whole = SimulatedDataset(cfg, length=2, upsampling=2, patch_size=None, fixed=True, normalizer=ds.normalizer)
    assert whole[1][0].shape == (1, 24, 24)
    batches = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert torch.equal(batches[0][0][0], ds[0][0])
    with pytest.raises(ValueError, match="patch_size: 30 px does not fit"): SimulatedDataset(cfg, patch_size=30)
    with pytest.raises(ValueError, match="config"): SimulatedDataset("emccd")
    with pytest.raises(IndexError): ds[6]
