"""Files written by dl4smlm, read the way each tool's own code reads them (and the reverse), re-implemented here from
the tools' source, not through dl4smlm's readers. Sources (commits in /work/notes/formats_conventions.md):
ThunderSTORM zitmen/thunderstorm e85c565 `ImportExport/DLMImportExport.importFromFile`; DECODE TuragaLab/DECODE 4c0f38c
`decode/utils/emitter_io.py` (`save_h5`, `load_h5`, `save_csv`, `load_csv`), `generic/emitter.py::EmitterSet._set_typed`,
`simulation/psf_kernel.py::DeltaPSF`; SMAP jries/SMAP 51d8b9a `MLE_GPU_Yiming.m::fit2locs`, `fitloc2locdata.m`,
`shared/myfunctions/decodeh5ToLoc.m`; Picasso picassosr 0.11.3 `picasso/io.py::load_locs`, `picasso/lib.py::ensure_sanity`."""
import json
import re
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

from dl4smlm.formats import SMAP_ORIGINS, read_table, write_table
from dl4smlm.tables import read_localizations, write_localizations

PIXEL = 100.0


def _table(n=300, width=40, height=30, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"frame": np.sort(rng.integers(1, 60, n)), "x [nm]": rng.uniform(0, width * PIXEL, n),
                         "y [nm]": rng.uniform(0, height * PIXEL, n), "sigma [nm]": rng.uniform(90, 150, n),
                         "intensity [photon]": rng.uniform(300, 8000, n), "offset [photon]": rng.uniform(5, 50, n),
                         "uncertainty [nm]": rng.uniform(3, 30, n)})


# ---------------------------------------------------------------- DECODE
def _decode_load_h5(path):
    """decode.utils.emitter_io.load_h5: {k: v[:]} for datasets with a shape, None for h5py.Empty; meta from /meta's attrs.
    EmitterSet._set_typed then calls phot.type(...) and frame_ix.dtype: both must be real arrays, frame_ix an integer."""
    with h5py.File(path, "r") as h5:
        data = {k: v[:] for k, v in h5["data"].items() if v.shape is not None}
        data.update({k: None for k, v in h5["data"].items() if v.shape is None})
        meta, decode = dict(h5["meta"].attrs), dict(h5["decode"].attrs)
    assert data["phot"] is not None and data["phot"].shape == (len(data["xyz"]),), "EmitterSet needs phot as a tensor"
    assert data["frame_ix"].dtype.kind == "i" and data["xyz"].dtype.kind == "f" and data["xyz"].shape[1] == 3
    assert {"xy_unit", "px_size"} <= set(meta) and "version" in decode
    return data, meta


def _delta_psf_pixels(xyz, img_shape):
    """DeltaPSF(xextent=(-0.5, H-0.5), yextent=(-0.5, W-0.5), img_shape).search_bin_index, then frames[n, x_ix, y_ix]:
    the (first-axis, second-axis) index of the image pixel each emitter lands in."""
    bin_x = np.linspace(-0.5, img_shape[0] - 0.5, img_shape[0] + 1)
    bin_y = np.linspace(-0.5, img_shape[1] - 0.5, img_shape[1] + 1)
    return np.searchsorted(bin_x, xyz[:, 0], side="right") - 1, np.searchsorted(bin_y, xyz[:, 1], side="right") - 1


def test_decode_h5_read_as_decode_reads_it(tmp_path):
    """Our (x, y) in nm → DECODE's xyz[:, 0] = row, xyz[:, 1] = column (DeltaPSF: frames[n, x_ix, y_ix]), px units with
    pixel centres at integer px, frame_ix from 0, phot a real array even when the table has no photons."""
    t = _table()
    write_table(t, tmp_path / "e.h5", pixel_nm=(PIXEL, 2 * PIXEL))   # non-square pixels tell the axes apart
    data, meta = _decode_load_h5(tmp_path / "e.h5")
    assert meta["xy_unit"] == "px" and list(meta["px_size"]) == [2 * PIXEL, PIXEL]   # ordered like xyz: (row, column)
    row, col = _delta_psf_pixels(data["xyz"], (30 // 2 + 1, 40))
    np.testing.assert_array_equal(row, np.floor(t["y [nm]"] / (2 * PIXEL)).astype(int))
    np.testing.assert_array_equal(col, np.floor(t["x [nm]"] / PIXEL).astype(int))
    # EmitterSet.xyz_nm multiplies by px_size, no shift: the centre of pixel 0 at 0 nm
    nm = data["xyz"][:, :2].astype(np.float64) * meta["px_size"]
    np.testing.assert_allclose(nm[:, 1] + PIXEL / 2, t["x [nm]"], atol=0.01)
    np.testing.assert_allclose(nm[:, 0] + PIXEL, t["y [nm]"], atol=0.01)
    np.testing.assert_array_equal(data["frame_ix"], t["frame"] - 1)
    np.testing.assert_allclose(data["phot"], t["intensity [photon]"], rtol=1e-6)
    write_table(t.drop(columns=["intensity [photon]"]), tmp_path / "nophot.h5", pixel_nm=PIXEL)
    data, _ = _decode_load_h5(tmp_path / "nophot.h5")
    assert np.isnan(data["phot"]).all() and data["xyz_cr"] is None   # NaN photons, as DECODE's own optional values


def test_decode_csv_read_as_decode_and_smap_read_it(tmp_path):
    """emitter_io.load_csv: skiprows=3, columns x, y, z, phot, frame_ix; the emitter meta JSON on line 3. SMAP's
    decodeh5ToLoc/loadcsv reads it with sscanf('# {%*s "%s}') and sscanf('# {%*s %*s %*s [%f, %f }'), then
    ynm = x·px_size(1), xnm = y·px_size(2), frame = frame_ix + 1."""
    t = _table(n=50)
    write_table(t, tmp_path / "e.csv", "decode-csv", pixel_nm=PIXEL)
    lines = (tmp_path / "e.csv").read_text().splitlines()
    meta = json.loads(lines[2].strip("# "))
    assert meta["xy_unit"] == "px" and meta["px_size"] == [PIXEL, PIXEL]
    assert re.fullmatch(r'# \{\S+ "(\S+)", \S+ \[([\d.]+), ([\d.]+)\]\}', lines[2]).groups() == ("px", "100.0", "100.0")
    assert re.fullmatch(r'# \{\S+ "\S+"\}', lines[1])   # the version is one word
    df = pd.read_csv(tmp_path / "e.csv", skiprows=3)
    assert {"x", "y", "z", "phot", "frame_ix"} <= set(df.columns)
    np.testing.assert_allclose(df["x"] * PIXEL, t["y [nm]"] - PIXEL / 2, atol=0.01)   # SMAP: ynm = x·px (its DECODE origin)
    np.testing.assert_allclose(df["y"] * PIXEL, t["x [nm]"] - PIXEL / 2, atol=0.01)
    np.testing.assert_array_equal(df["frame_ix"] + 1, t["frame"])


def test_decode_files_as_decode_writes_them_are_read_with_x_as_the_row(tmp_path):
    "The reverse: emitter_io.save_h5 / save_csv layouts with an emitter in row 2, column 7 (DeltaPSF's frames[n, 2, 7])."
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_group("meta").attrs.update({"xy_unit": "px", "px_size": np.float32([100.0, 100.0])})
        f.create_group("decode").attrs["version"] = "0.10.0"
        g = f.create_group("data")
        g["xyz"], g["phot"] = np.float32([[2.0, 7.0, 0.0]]), np.float32([900.0])
        g["frame_ix"], g["id"], g["prob"], g["bg"] = np.int64([0]), np.int64([3]), np.float32([1.0]), np.float32([20.0])
        for k in ("xyz_sig", "xyz_cr", "phot_cr", "phot_sig", "bg_cr", "bg_sig"): g.create_dataset(k, data=h5py.Empty("f"))
    df = read_table(tmp_path / "d.h5")
    assert df[["frame", "x [nm]", "y [nm]"]].values.tolist() == [[1, 750.0, 250.0]]
    (tmp_path / "d.csv").write_text('# DECODE EmitterSet\n# {"version": "0.10.0"}\n# {"xy_unit": "px", "px_size": [100.0, 100.0]}\n'
                                    "x,y,z,phot,frame_ix,id,prob,bg\n2.0,7.0,0.0,900.0,0,3,1.0,20.0\n")
    for read in (read_table, read_localizations):
        assert read(tmp_path / "d.csv")[["frame", "x [nm]", "y [nm]"]].values.tolist() == [[1, 750.0, 250.0]]
    (tmp_path / "neg.csv").write_text((tmp_path / "d.csv").read_text().replace(",0,3,", ",-1,3,"))
    with pytest.raises(ValueError, match=r"neg\.csv: frame_ix -1; DECODE counts frames from 0"):
        read_table(tmp_path / "neg.csv")


# ---------------------------------------------------------------- ThunderSTORM
_JAVA_NUMBER = re.compile(r"-?(\d+\.?\d*|\.\d+)(E-?\d+)?")


def _java_decimal_format_parse(cell):
    """java.text.DecimalFormat.parse(String) with ThunderSTORM's symbols (Locale.US, NaN "NaN", Infinity "Infinity"):
    the longest number at the start, exponent only after "E" (no "+"); ParseException (None) when nothing parses."""
    if cell in ("NaN", "Infinity", "-Infinity"): return float(cell.replace("Infinity", "inf"))
    m = _JAVA_NUMBER.match(cell)
    return float(m.group(0)) if m else None


def _thunderstorm_import(path):
    """DLMImportExport.importFromFile: header split on ',', quotes trimmed, 'id' skipped; every other cell parsed as a
    double; a row with an unparsable cell or another number of cells is skipped ("Skipping over...")."""
    lines = path.read_text().splitlines()
    split = lambda line: [c.strip().strip('"') for c in line.split(",")]
    names = split(lines[0])
    rows = []
    for line in lines[1:]:
        cells = split(line)
        if len(cells) != len(names): continue
        values = [_java_decimal_format_parse(c) for n, c in zip(names, cells) if n != "id"]
        if None not in values: rows.append(values)
    return pd.DataFrame(rows, columns=[n for n in names if n != "id"])


def test_fit_table_imports_into_thunderstorm(tmp_path):
    """The fitter's columns (ThunderSTORM's, then loglik_ratio and the bool converged) with a NaN, a tiny and a huge value:
    every row imports, every cell keeps its value (True/False used to skip every row, 1e-05 used to read as 1)."""
    t = _table(n=20)
    t["loglik_ratio"], t["converged"] = np.linspace(0, 50, 20), np.arange(20) % 3 > 0
    t.loc[0, "offset [photon]"], t.loc[1, "loglik_ratio"], t.loc[2, "uncertainty [nm]"] = 3.2e-05, 1e20, np.nan
    write_localizations(tmp_path / "fit.csv", t)
    ts = _thunderstorm_import(tmp_path / "fit.csv")
    assert len(ts) == len(t)
    for c in t.columns:
        np.testing.assert_allclose(ts[c].to_numpy(np.float64), t[c].to_numpy(np.float64), rtol=1e-12, err_msg=c)
    back = read_localizations(tmp_path / "fit.csv")
    assert back["converged"].astype(bool).tolist() == t["converged"].tolist()
    with pytest.raises(ValueError, match=r"column 'note' holds 'a'; ThunderSTORM's importer reads every cell as a number"):
        write_localizations(tmp_path / "text.csv", t.assign(note="a"))


def test_repeated_columns_are_refused_before_pandas_renames_them(tmp_path):
    (tmp_path / "dup.csv").write_text('"frame","x [nm]","y [nm]","x [nm]"\n1,10,20,30\n')
    (tmp_path / "dup_smap.csv").write_text("xnm,ynm,frame,xnm\n10,20,1,30\n")
    for path in (tmp_path / "dup.csv", tmp_path / "dup_smap.csv"):
        with pytest.raises(ValueError, match=r"\['(x \[nm\]|xnm)'\] appears more than once in the header"):
            read_table(path, pixel_nm=PIXEL)
    with pytest.raises(ValueError, match=r"appears more than once"):
        read_localizations(tmp_path / "dup.csv")


# ---------------------------------------------------------------- SMAP
def test_smap_origin_as_smaps_fitter_writes_it(tmp_path):
    """fit2locs: xpix = P(:,2) − dn + posx, P with pixel centres at 0-based ROI indices, posx the 1-based image column:
    xpix has pixel centres at 1-based integers; fitloc2locdata: xnm = xpix·pixelsize. A molecule at the centre of
    (0-based) column 3, row 2 is xnm = 400, ynm = 300 at 100 nm pixels; in dl4smlm (350, 250)."""
    (tmp_path / "fit.csv").write_text("xnm,ynm,frame,phot\n400,300,1,1000\n")
    for origin, want in (("fitter", [350.0, 250.0]), ("centre", [450.0, 350.0]), ("corner", [400.0, 300.0])):
        df = read_table(tmp_path / "fit.csv", pixel_nm=PIXEL, origin=origin)
        assert df[["x [nm]", "y [nm]"]].values.tolist() == [want], origin
    assert read_table(tmp_path / "fit.csv", pixel_nm=PIXEL).attrs["smap_origin"] == "fitter"
    with pytest.raises(ValueError, match=r"needs the pixel size: pass pixel_nm \(--pixel-nm\), or origin='corner'"):
        read_table(tmp_path / "fit.csv")
    t = pd.DataFrame({"frame": [1], "x [nm]": [350.0], "y [nm]": [250.0]})
    for origin, c in SMAP_ORIGINS.items():
        write_table(t, tmp_path / f"{origin}.csv", "smap", pixel_nm=PIXEL, origin=origin)
        got = pd.read_csv(tmp_path / f"{origin}.csv")   # MATLAB readtable: the names as written
        assert got[["xnm", "ynm"]].values.tolist() == [[(3 + c) * PIXEL, (2 + c) * PIXEL]], origin


# ---------------------------------------------------------------- Picasso
def _picasso_ensure_sanity(locs, info):
    "picasso/lib.py::ensure_sanity (0.11.3): drop NaN/inf rows, x ≥ Width, y ≥ Height, negative x, y, lpx, lpy, photons, sx, sy."
    df = pd.DataFrame({n: locs[n] for n in locs.dtype.names}).replace([np.inf, -np.inf], np.nan).dropna()
    df = df[(df["x"] < info["Width"]) & (df["y"] < info["Height"])]
    for n in ("x", "y", "lpx", "lpy", "lpz", "photons", "ellipticity", "sx", "sy"):
        if n in df: df = df[df[n] >= 0]
    return df


def test_picasso_file_read_as_picasso_reads_it(tmp_path):
    """Picasso's pixel centres are at integer px (gaussfit evaluates the model at integer box indices), frames from 0;
    the rows in the outer half of the first pixel (x or y < 0 px) are dropped by ensure_sanity, and dl4smlm says so."""
    import yaml
    t = _table(n=200)
    t[["x [nm]", "y [nm]"]] = t[["x [nm]", "y [nm]"]].clip(lower=51.0)
    t.loc[:4, "x [nm]"] = [0.0, 10.0, 20.0, 30.0, 49.0]
    with pytest.warns(UserWarning, match=r"5 of 200 localizations lie outside Picasso's frame.*lib\.ensure_sanity"):
        write_table(t, tmp_path / "p.hdf5", pixel_nm=PIXEL, frame_shape=(30, 40))
    with h5py.File(tmp_path / "p.hdf5") as f: locs = f["locs"][()]
    info = {k: v for d in yaml.load_all((tmp_path / "p.yaml").read_text(), Loader=yaml.SafeLoader) for k, v in d.items()}
    kept = _picasso_ensure_sanity(locs, info)
    assert len(kept) == 195 and locs["frame"].dtype == np.uint32
    s = t.sort_values("frame", kind="stable").reset_index(drop=True)
    np.testing.assert_allclose((locs["x"].astype(np.float64) + 0.5) * PIXEL, s["x [nm]"], atol=0.01)
    np.testing.assert_allclose((locs["y"].astype(np.float64) + 0.5) * PIXEL, s["y [nm]"], atol=0.01)
    np.testing.assert_array_equal(locs["frame"], s["frame"] - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # nothing to drop, nothing said
        write_table(t.iloc[5:], tmp_path / "q.hdf5", pixel_nm=PIXEL, frame_shape=(30, 40))
