"""dl4smlm.compare: reproducible, density-independent test sets; mixed-density training data with one shared
normaliser; the oracle scores at the grid floor with no bias; compare_models on names, checkpoints, modules and
dict labels, with clear errors for bad entries; plot_comparison's panels."""
import dataclasses
import math

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from fastcore.test import test_close as assert_close, test_eq as assert_eq

from dl4smlm.compare import (DENSITIES, MixedDensityDataset, OracleModel, compare_models, grid_floor_nm, make_test_sets,
                             plot_comparison, score_model)
from dl4smlm.normalize import Normalizer
from dl4smlm.models import count_parameters, get_model
from dl4smlm.simulate import SimulationConfig
from dl4smlm.checkpoint import load_model

SMALL = SimulationConfig(height=32, width=32)
TINY = dict(densities=(1.0, 4.0), test_frames=4, upsampling=4, epochs=1, samples_per_epoch=32, valid_samples=8,
            batch_size=16, patch_size=16, device="cpu", seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    "A tiny comparison run (SRCNN under the label 'small'), its checkpoint kept."
    out = tmp_path_factory.mktemp("ck")
    table = compare_models({"small": "srcnn"}, SMALL, out_dir=out, **TINY)
    return table, out / "small.pt"


# make_test_sets

def test_test_sets_are_reproducible():
    a, b = make_test_sets(SMALL, (1.0, 4.0), 3, seed=5), make_test_sets(SMALL, (1.0, 4.0), 3, seed=5)
    for d in (1.0, 4.0):
        np.testing.assert_array_equal(a[d].frames, b[d].frames)
        pd.testing.assert_frame_equal(a[d].ground_truth, b[d].ground_truth)


def test_test_set_depends_only_on_seed_and_density():
    both = make_test_sets(SMALL, (1.0, 4.0), 3, seed=0)
    alone = make_test_sets(SMALL, (4.0,), 3, seed=0)
    reordered = make_test_sets(SMALL, (6.0, 4.0, 0.5), 3, seed=0)
    np.testing.assert_array_equal(alone[4.0].frames, both[4.0].frames)
    np.testing.assert_array_equal(reordered[4.0].frames, both[4.0].frames)
    assert not np.array_equal(make_test_sets(SMALL, (4.0,), 3, seed=1)[4.0].frames, both[4.0].frames)


def test_test_sets_differ_between_densities_and_keep_the_imaging_conditions():
    sets = make_test_sets(SMALL, (2.0, 2.001), 3, seed=0)
    a, b = sets.values()
    assert not np.array_equal(a.frames, b.frames)              # independent streams, even for nearly equal densities
    for d, sim in sets.items():
        assert_eq(sim.frames.shape, (3, 32, 32))
        assert_eq(sim.config.density, d)
        assert_eq(dataclasses.replace(sim.config, density=SMALL.density, frames=SMALL.frames, seed=SMALL.seed), SMALL)


def test_test_sets_default_to_the_challenge_like_config():
    sim = make_test_sets(densities=(0.5,), frames=1)[0.5]
    assert_eq(sim.frames.shape, (1, 64, 64))
    assert_eq(sim.config.pixel_nm, SimulationConfig().pixel_nm)
    assert_eq(DENSITIES, (0.5, 1.0, 2.0, 4.0, 6.0))


@pytest.mark.parametrize("densities", [(), (1.0, -1.0), (0.0,), (float("nan"),), (1.0, 1.0), ("dense",), 3.0])
def test_bad_densities_are_named(densities):
    with pytest.raises(ValueError, match="densities"): make_test_sets(SMALL, densities, 2)


@pytest.mark.parametrize("frames", [0, -3, 2.5, True, "4"])
def test_bad_frame_counts_are_named(frames):
    with pytest.raises(ValueError, match="frames"): make_test_sets(SMALL, (1.0,), frames)


# MixedDensityDataset

def test_mixed_dataset_interleaves_densities_and_shares_one_normalizer():
    ds = MixedDensityDataset(SMALL, (1.0, 4.0, 6.0), length=10, upsampling=4, patch_size=16, seed=0)
    assert_eq(len(ds), 10)
    assert_eq([len(p) for p in ds.parts], [4, 3, 3])             # equal shares, the first densities take the remainder
    assert_eq([p.config.density for p in ds.parts], [1.0, 4.0, 6.0])
    assert_eq({id(p.normalizer) for p in ds.parts}, {id(ds.normalizer)})
    for k in (0, 4, 5, 9):                                      # item k is item k // n of part k % n
        x, y = ds[k]
        xp, yp = ds.parts[k % 3][k // 3]
        assert torch.equal(x, xp) and torch.equal(y, yp)
    assert torch.equal(ds[-1][0], ds[9][0])
    with pytest.raises(IndexError): ds[10]
    new = Normalizer(0.2, 0.1)
    ds.normalizer = new                                         # one assignment reaches every part
    assert all(p.normalizer is new for p in ds.parts)


def test_mixed_dataset_is_reproducible_and_fixed_means_fixed():
    a = MixedDensityDataset(SMALL, (1.0, 4.0), length=4, upsampling=4, patch_size=16, seed=3)
    b = MixedDensityDataset(SMALL, (1.0, 4.0), length=4, upsampling=4, patch_size=16, seed=3)
    assert torch.equal(a[1][0], b[1][0]) and a.normalizer == b.normalizer
    v = MixedDensityDataset(SMALL, (1.0, 4.0), length=4, upsampling=4, patch_size=16, seed=3, fixed=True, normalizer=a.normalizer)
    assert v.normalizer is a.normalizer
    first = v[2][0]
    v.set_epoch(5)
    assert torch.equal(v[2][0], first)
    a.set_epoch(5)
    assert not torch.equal(a[2][0], b[2][0])


@pytest.mark.parametrize("length", [1, 0, True, 2.0])
def test_mixed_dataset_needs_one_item_per_density(length):
    with pytest.raises(ValueError, match="length"):
        MixedDensityDataset(SMALL, (1.0, 4.0), length=length, upsampling=4, patch_size=16, normalizer=Normalizer(0.2, 0.1))


# the oracle and score_model

@pytest.fixture(scope="module")
def sparse():
    return make_test_sets(SimulationConfig(), (0.5,), frames=8, seed=0)


def test_oracle_scores_perfect_detection_at_the_grid_floor(sparse):
    oracle = OracleModel(sparse, upsampling=4)
    row = score_model(oracle, sparse, device="cpu").iloc[0]
    assert row["tp"] > 100
    assert_eq((row["fp"], row["fn"]), (0, 0))
    assert_eq(row["jaccard_pct"], 100.0)
    assert_close(row["grid_nm"], grid_floor_nm(100, 4), eps=1e-12)
    assert_close(row["rmse_nm"], row["grid_nm"], eps=0.15 * row["grid_nm"])
    se = row["grid_nm"] / math.sqrt(2 * row["tp"])
    assert abs(row["mean_dx_nm"]) < 4 * se and abs(row["mean_dy_nm"]) < 4 * se
    assert_eq((row["parameters"], row["gmacs_per_frame"]), (0, 0.0))
    assert row["crlb_nm"] > 0 and row["floor_nm"] > row["grid_nm"] and row["ms_per_frame"] > 0


def test_oracle_refuses_unknown_frames_and_bad_input(sparse):
    oracle = OracleModel(sparse, upsampling=4)
    with pytest.raises(ValueError, match="not among"): oracle(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="expected"): oracle(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="simulations"): OracleModel([], upsampling=4)
    with pytest.raises(ValueError, match="simulations"): OracleModel([np.zeros((2, 8, 8))])


def test_score_model_needs_a_normalizer_and_test_sets(sparse):
    with pytest.raises(ValueError, match="normalizer"): score_model(get_model("srcnn", 4), sparse)
    with pytest.raises(ValueError, match="test_sets"): score_model(OracleModel(sparse, 4), {})


def test_grid_floor():
    assert_close(grid_floor_nm(100, 8), 100 / 8 / math.sqrt(6), eps=1e-12)
    for bad in [(0, 4), (100, 0), (-5, 2)]:
        with pytest.raises(ValueError, match="grid_floor_nm"): grid_floor_nm(*bad)


# compare_models

def test_compare_trains_names_under_dict_labels(trained):
    table, path = trained
    assert_eq(table["model"].tolist(), ["small", "small"])
    assert_eq(table["density"].tolist(), [1.0, 4.0])
    assert_eq(table["parameters"].tolist(), [count_parameters(get_model("srcnn", 4))] * 2)
    assert_eq(table["upsampling"].tolist(), [4, 4])
    assert (table["train_s"] > 0).all() and (table["ms_per_frame"] > 0).all()
    assert path.is_file()                                      # out_dir keeps the checkpoint as LABEL.pt


def test_compare_takes_checkpoints_modules_and_the_oracle(trained):
    table, path = trained
    tests = make_test_sets(SMALL, TINY["densities"], TINY["test_frames"], TINY["seed"])
    module = load_model(path)
    out = compare_models([path, module, OracleModel(tests, upsampling=4)], SMALL, **TINY)
    assert_eq(out["model"].unique().tolist(), ["small", "srcnn", "oracle"])   # file stem, model name, module name
    assert out["train_s"].isna().all()                          # nothing was trained
    cols = ["model", "n_ground_truth", "tp", "fp", "fn", "jaccard_pct"]
    pd.testing.assert_frame_equal(out[out["model"] == "small"][cols].reset_index(drop=True), table[cols])   # the same model, the same frames
    pd.testing.assert_frame_equal(out[out["model"] == "srcnn"][cols[1:]].reset_index(drop=True), table[cols[1:]])
    assert_eq(out.groupby("density")["n_ground_truth"].nunique().tolist(), [1, 1])
    assert_eq(out[out["model"] == "oracle"]["fp"].tolist(), [0, 0])


@pytest.mark.parametrize("models, message", [
    (["srcnn", "no-such-net"], "no-such-net"),
    (["missing.pt"], "missing.pt"),
    ([], "none"),
    ({}, "none"),
    ([42], "42"),
    (["srcnn", "SRCNN"], "unique"),
    ({"a": "srcnn", "b": "no-such-net"}, "no-such-net"),
])
def test_bad_entries_are_named(models, message):
    with pytest.raises(ValueError, match=message): compare_models(models, SMALL, **TINY)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="train_densities"): compare_models(["srcnn"], SMALL, train_densities=(), **TINY)
    with pytest.raises(ValueError, match="data"): compare_models(["srcnn"], SMALL, data=object(), **TINY)
    with pytest.raises(ValueError, match="densities"): compare_models(["srcnn"], SMALL, **(TINY | {"densities": (-1.0,)}))


# plot_comparison

def test_plot_comparison_panels(trained):
    table, _ = trained
    fig = plot_comparison(table)
    assert_eq(len(fig.axes), 3)
    assert_eq([a.get_ylabel() for a in fig.axes], ["Jaccard index [%]", "lateral RMSE [nm]", "efficiency [%]"])
    assert_eq({a.get_xlabel() for a in fig.axes}, {"emitter density [µm⁻²]"})
    assert_eq([len(a.lines) for a in fig.axes], [1, 2, 1])      # one line per model; the floor on the RMSE panel
    assert_eq(fig.axes[1].lines[1].get_label(), "CRLB + grid floor")
    np.testing.assert_allclose(fig.axes[1].lines[1].get_ydata(), table["floor_nm"].to_numpy(float))
    plt.close(fig)


def test_plot_comparison_draws_on_given_axes_one_line_per_model(trained):
    table, _ = trained
    two = pd.concat([table, table.assign(model="other", jaccard_pct=table["jaccard_pct"] + 1)], ignore_index=True)
    fig, axes = plt.subplots(1, 2)
    assert plot_comparison(two, ("jaccard_pct", "ms_per_frame"), axes=axes) is fig
    assert_eq([len(a.lines) for a in axes], [2, 2])
    np.testing.assert_allclose(axes[0].lines[1].get_ydata(), two["jaccard_pct"].iloc[2:].to_numpy(float))
    assert_eq(axes[1].get_ylabel(), "time per frame [ms]")
    floors = two.assign(floor_nm=[12.0, 13.0, 12.0, 13.0])
    outlier = pd.concat([floors, table.assign(model="dark", floor_nm=1e4)], ignore_index=True)   # a model that matched a dark molecule
    fig = plot_comparison(outlier, ("rmse_nm",))
    np.testing.assert_allclose(fig.axes[0].lines[-1].get_ydata(), [12.0, 13.0])   # the median over models ignores it
    single = plot_comparison(table, "rmse_nm")
    assert_eq(len(single.axes), 1)
    with pytest.raises(ValueError, match="speed"): plot_comparison(table, ("speed",))
    with pytest.raises(ValueError, match="density"): plot_comparison(table.drop(columns="density"))
    plt.close("all")


def test_compare_scores_with_flip_average(trained):
    table, path = trained
    flips = compare_models({"small+flips": path}, SMALL, flip_average=True, **TINY)
    assert flips["flip_average"].all() and not table["flip_average"].any()
    assert_eq(flips["n_ground_truth"].tolist(), table["n_ground_truth"].tolist())   # the same test frames
