"Bad input, round trips and atomicity for dl4smlm.io (the lesson is nbs/01_io.ipynb)."
import json
import multiprocessing
import os
import pickle
import stat
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import tifffile

from dl4smlm import __version__
from dl4smlm import io
from dl4smlm.files import atomic_write, read_json, write_json
from dl4smlm.io import LazyTiffStack, read_stack, write_stack
from dl4smlm.tables import LOCALIZATION_COLUMNS, read_localizations, write_localizations


def _leftovers(folder):
    "Temporary files atomic_write left behind."
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def _stack(n=6, h=12, w=10, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(90, 4000, size=(n, h, w)).astype(dtype)


def _table(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(1, n + 1), "frame": rng.integers(1, 4, n),
                         "x [nm]": rng.uniform(0, 6400, n), "y [nm]": rng.uniform(0, 6400, n),
                         "sigma [nm]": np.full(n, 110.0), "intensity [photon]": rng.uniform(500, 5000, n)})


# ---------------------------------------------------------------- atomic writes

def test_atomic_write_creates_file_and_no_temp(tmp_path):
    with atomic_write(tmp_path / "a.bin") as f:
        f.write(b"new")
        assert not (tmp_path / "a.bin").exists()  # nothing visible until the block ends
        assert len(_leftovers(tmp_path)) == 1 and os.path.dirname(f.name) == str(tmp_path)
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_atomic_write_text_mode_is_utf8(tmp_path):
    with atomic_write(tmp_path / "a.txt", "w") as f: f.write("µm\n")
    assert (tmp_path / "a.txt").read_bytes() == "µm\n".encode("utf-8")


@pytest.mark.parametrize("existing", [True, False])
def test_atomic_write_failure_keeps_old_file_and_removes_temp(tmp_path, existing):
    target = tmp_path / "a.txt"
    if existing: target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(target, "w") as f:
            f.write("half of the new cont")
            raise RuntimeError("disk full")
    assert (target.read_text() == "old") if existing else not target.exists()
    assert _leftovers(tmp_path) == []


def test_atomic_write_keyboard_interrupt_cleans_up(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "a.txt", "w") as f:
            f.write("partial")
            raise KeyboardInterrupt
    assert (tmp_path / "a.txt").read_text() == "old" and _leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_atomic_write_keeps_permissions_of_replaced_file(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    with atomic_write(target, "w") as f: f.write("new")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_atomic_write_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"a\.txt: atomic_write mode must be .* got 'a'"):
        with atomic_write(tmp_path / "a.txt", "a"): pass
    with pytest.raises(FileNotFoundError, match="the folder .*nowhere does not exist"):
        with atomic_write(tmp_path / "nowhere" / "a.txt"): pass
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        with atomic_write(tmp_path / "d"): pass
    assert _leftovers(tmp_path) == []


def test_write_json_round_trip_with_numpy_values(tmp_path):
    obj = {"a": np.float64(1.5), "b": np.int64(3), "c": np.arange(3), "d": [None, True, "µ"], "p": tmp_path}
    write_json(tmp_path / "o.json", obj)
    assert read_json(tmp_path / "o.json") == {"a": 1.5, "b": 3, "c": [0, 1, 2], "d": [None, True, "µ"],
                                              "p": str(tmp_path)}


def test_write_json_failure_mid_write_keeps_old_file(tmp_path):
    target = tmp_path / "o.json"
    write_json(target, {"old": 1})
    before = target.read_bytes()
    with pytest.raises(TypeError, match=r"o\.json: cannot write as JSON: .*object"):
        write_json(target, {"first": list(range(100)), "then": object()})  # json.dump writes the list, then fails
    assert target.read_bytes() == before and _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match=r"o\.json: cannot write as JSON: Out of range float"):
        write_json(target, {"x": float("nan")})
    assert target.read_bytes() == before and _leftovers(tmp_path) == []


def test_read_json_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.json: no such file"): read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{'single': quotes}")
    with pytest.raises(ValueError, match=r"bad\.json: not valid JSON"): read_json(tmp_path / "bad.json")


# ---------------------------------------------------------------- stacks

@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_stack_round_trip_is_memory_mapped(tmp_path, dtype):
    a = _stack(dtype=dtype)
    write_stack(tmp_path / "s.tif", a)
    s = read_stack(tmp_path / "s.tif")
    assert isinstance(s, np.memmap) and s.dtype == dtype and s.shape == a.shape
    np.testing.assert_array_equal(s, a)
    with pytest.raises(ValueError, match="read-only"): s[0, 0, 0] = 1  # the file cannot be changed by accident
    m = read_stack(tmp_path / "s.tif", mmap=False)
    assert type(m) is np.ndarray
    np.testing.assert_array_equal(m, a)
    assert _leftovers(tmp_path) == []


def test_write_stack_is_an_imagej_hyperstack_with_calibration(tmp_path):
    write_stack(tmp_path / "s.tif", _stack(), pixel_nm=100.0)
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"
        assert tif.imagej_metadata["frames"] == 6 and tif.imagej_metadata["unit"] == "um"
        assert tif.pages[0].resolution == pytest.approx((10.0, 10.0))  # 10 pixels per µm = 100 nm pixels


def test_large_compressed_stacks_are_written_as_bigtiff(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "_CLASSIC_TIFF_MAX", 500)  # pretend the 960-byte stack is over 4 GB
    a = _stack(n=4, h=12, w=10)
    write_stack(tmp_path / "big.tif", a, pixel_nm=100.0, compression="zlib")
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff and not tif.is_imagej and tif.pages[0].resolution == pytest.approx((10.0, 10.0))
    with read_stack(tmp_path / "big.tif") as s:
        np.testing.assert_array_equal(s[:], a)
    write_stack(tmp_path / "raw.tif", a)  # uncompressed stacks stay ImageJ hyperstacks at any size
    with tifffile.TiffFile(tmp_path / "raw.tif") as tif:
        assert tif.is_imagej and not tif.is_bigtiff


def test_write_stack_of_three_frames_is_not_taken_for_rgb(tmp_path):
    write_stack(tmp_path / "s.tif", _stack(n=3))
    assert read_stack(tmp_path / "s.tif").shape == (3, 12, 10)


def test_write_stack_converts_dtypes(tmp_path):
    write_stack(tmp_path / "i.tif", _stack(dtype=np.int64))
    assert read_stack(tmp_path / "i.tif").dtype == np.uint16
    write_stack(tmp_path / "f.tif", _stack(dtype=np.float64) / 7)
    f = read_stack(tmp_path / "f.tif")
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, _stack() / 7, rtol=1e-6)


@pytest.mark.parametrize("frames, message", [
    (np.zeros((2, 4, 5), np.uint16)[None], r"expected a \(frames, height, width\) stack with at least one frame, got shape \(1, 2, 4, 5\)"),   # a (height, width) frame is a stack of one
    (np.zeros((0, 4, 5), np.uint16), r"got shape \(0, 4, 5\)"),
    (np.zeros((2, 1, 4, 5), np.uint16), r"got shape \(2, 1, 4, 5\)"),
    (np.full((2, 4, 5), 70000, np.int32), r"int32 values from 70000 to 70000 do not fit uint16"),
    (np.full((2, 4, 5), -1, np.int16), r"int16 values from -1 to -1 do not fit uint16"),
    (np.zeros((2, 4, 5), bool), r"expected uint16 or float32 frames, got bool"),
    (np.zeros((2, 4, 5), np.complex64), r"expected uint16 or float32 frames, got complex64"),
    (np.where(np.arange(40).reshape(2, 4, 5) == 33, np.nan, 1.0), r"frames contain NaN values \(first in frame 1"),
    (np.where(np.arange(40).reshape(2, 4, 5) == 3, np.inf, 1.0), r"frames contain infinite values \(first in frame 0"),
])
def test_write_stack_rejects_bad_frames(tmp_path, frames, message):
    with pytest.raises(ValueError, match=r"out\.tif: .*" + message): write_stack(tmp_path / "out.tif", frames)
    assert list(tmp_path.iterdir()) == []


def test_write_stack_rejects_bad_pixel_size(tmp_path):
    with pytest.raises(ValueError, match=r"out\.tif: pixel_nm must be positive, got 0"):
        write_stack(tmp_path / "out.tif", _stack(), pixel_nm=0)


def test_write_stack_failure_mid_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "s.tif"
    write_stack(target, _stack(seed=1))
    before = target.read_bytes()

    def broken_imwrite(f, data, **kwargs):
        f.write(b"II*\x00" + bytes(1000))
        raise OSError("No space left on device")
    monkeypatch.setattr(tifffile, "imwrite", broken_imwrite)
    with pytest.raises(OSError, match="No space left"): write_stack(target, _stack(seed=2))
    assert target.read_bytes() == before and _leftovers(tmp_path) == []


def test_compressed_stack_is_read_lazily(tmp_path, monkeypatch):
    a = _stack(n=8)
    write_stack(tmp_path / "c.tif", a, compression="zlib")
    decoded = []  # frame indices tifffile was asked to decode
    original = tifffile.TiffPageSeries.asarray
    def spy(self, *args, key=None, **kwargs):
        decoded.append(key)
        return original(self, *args, key=key, **kwargs)
    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", spy)
    with read_stack(tmp_path / "c.tif") as s:
        assert isinstance(s, LazyTiffStack) and decoded == []  # opening decodes nothing
        assert s.shape == a.shape and s.dtype == np.uint16 and len(s) == 8 and s.ndim == 3
        np.testing.assert_array_equal(s[3], a[3])
        assert decoded == [[3]]
        np.testing.assert_array_equal(s[-1], a[-1])
        np.testing.assert_array_equal(s[2:5], a[2:5])
        np.testing.assert_array_equal(s[::3], a[::3])
        np.testing.assert_array_equal(s[[7, 0, 7]], a[[7, 0, 7]])
        np.testing.assert_array_equal(s[np.arange(8) % 2 == 0], a[::2])
        np.testing.assert_array_equal(s[np.int64(1), 2:5, 3], a[1, 2:5, 3])
        np.testing.assert_array_equal(s[1:3, :, -1], a[1:3, :, -1])
        assert s[5:5].shape == (0, 12, 10)
        assert decoded == [[3], [7], [2, 3, 4], [0, 3, 6], [7, 0, 7], [0, 2, 4, 6], [1], [1, 2]]
        np.testing.assert_array_equal(np.asarray(s), a)
        np.testing.assert_array_equal(np.stack(list(s)), a)
        assert np.asarray(s, dtype=np.float32).dtype == np.float32
        with pytest.raises(IndexError, match=r"c\.tif: frame 8 is out of range for 8 frames"): s[8]
        with pytest.raises(IndexError, match=r"c\.tif: frame -9 is out of range"): s[-9]
        with pytest.raises(IndexError, match="use np.asarray"): s[..., 0]
        assert "LazyTiffStack" in repr(s) and "(8, 12, 10)" in repr(s)
        s2 = pickle.loads(pickle.dumps(s))  # e.g. sent to a spawned DataLoader worker: reopens the file
        np.testing.assert_array_equal(s2[4], a[4])
        s2.close()
    np.testing.assert_array_equal(read_stack(tmp_path / "c.tif", mmap=False), a)


def test_uncompressed_but_scattered_stack_is_read_lazily(tmp_path):
    a = _stack()
    with tifffile.TiffWriter(tmp_path / "p.tif") as tw:
        for frame in a: tw.write(frame, contiguous=False, photometric="minisblack", metadata=None)
    with pytest.raises(ValueError, match="not memory-mappable"): tifffile.memmap(tmp_path / "p.tif")
    with read_stack(tmp_path / "p.tif") as s:
        assert isinstance(s, LazyTiffStack)
        np.testing.assert_array_equal(s[:], a)


def _frame_sums(stack, queue):
    queue.put([int(stack[i].sum()) for i in range(len(stack))])


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_lazy_stack_reads_correctly_in_a_forked_process(tmp_path):
    a = _stack(n=20)
    write_stack(tmp_path / "c.tif", a, compression="zlib")
    with read_stack(tmp_path / "c.tif") as s:
        s[0]  # the parent has used its file handle
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        workers = [ctx.Process(target=_frame_sums, args=(s, queue)) for _ in range(2)]
        for w in workers: w.start()
        results = [queue.get(timeout=60) for _ in workers]
        for w in workers: w.join(timeout=60)
        assert results == [[int(f.sum()) for f in a]] * 2
        np.testing.assert_array_equal(s[19], a[19])


def test_read_stack_refuses_a_2d_image_unless_asked(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", _stack()[0])
    with pytest.raises(ValueError, match=r"one\.tif: expected a \(frames, height, width\) stack, got a single 2-D image "
                                         r"of shape \(12, 10\); to use it as one frame, save it as a one-frame stack "
                                         r"\(dl4smlm.io.write_stack\) or read it with allow_single_frame=True"):
        read_stack(tmp_path / "one.tif")
    s = read_stack(tmp_path / "one.tif", allow_single_frame=True)
    assert s.shape == (1, 12, 10) and isinstance(s, np.memmap)
    tifffile.imwrite(tmp_path / "onec.tif", _stack()[0], compression="zlib")
    s = read_stack(tmp_path / "onec.tif", allow_single_frame=True)
    assert s.shape == (1, 12, 10)
    np.testing.assert_array_equal(s[0], _stack()[0])


@pytest.mark.parametrize("data, kwargs, message", [
    (np.zeros((12, 10, 3), np.uint8), {}, r"got an RGB/multi-sample image of shape \(12, 10, 3\) \(axes 'YXS'\)"),
    (np.zeros((3, 12, 10), np.uint8), {"photometric": "rgb", "planarconfig": "separate"},
     r"got an RGB/multi-sample image of shape \(3, 12, 10\) \(axes 'SYX'\)"),
    (np.zeros((2, 3, 12, 10), np.uint16), {"imagej": True},
     r"expected a \(frames, height, width\) stack, got shape \(2, 3, 12, 10\) \(axes 'ZCYX'\)"),
    (np.zeros((2, 12, 10), bool), {"photometric": "minisblack"}, "expected integer or float pixels, got bool"),
])
def test_read_stack_refuses_other_layouts(tmp_path, data, kwargs, message):
    tifffile.imwrite(tmp_path / "x.tif", data, **kwargs)
    with pytest.raises(ValueError, match=r"x\.tif: .*" + message): read_stack(tmp_path / "x.tif")


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (-np.inf, "infinite")])
def test_read_stack_refuses_float_stacks_with_nan(tmp_path, compression, bad, kind):
    a = _stack(dtype=np.float32)
    a[4, 2, 3] = bad
    tifffile.imwrite(tmp_path / "f.tif", a, compression=compression, photometric="minisblack")
    message = rf"f\.tif: float stack contains {kind} values \((first )?in frame 4, counted from 0\)"
    for mmap in (True, False):
        s = read_stack(tmp_path / "f.tif", mmap=mmap) if compression and mmap else None
        if s is None:
            with pytest.raises(ValueError, match=message): read_stack(tmp_path / "f.tif", mmap=mmap)
        else:  # lazy: frames are checked as they are decoded
            np.testing.assert_array_equal(s[:4], a[:4])
            with pytest.raises(ValueError, match=message): s[3:6]
            s.close()
    assert np.isnan(read_stack(tmp_path / "f.tif", check_finite=False)[4, 2, 3]) == (kind == "NaN")


def test_read_stack_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.tif: no such file \(expected a TIFF stack\)"):
        read_stack(tmp_path / "missing.tif")
    (tmp_path / "empty.tif").touch()
    with pytest.raises(ValueError, match=r"empty\.tif: empty file \(0 bytes\), expected a TIFF stack"):
        read_stack(tmp_path / "empty.tif")
    (tmp_path / "table.tif").write_text("frame,x [nm]\n1,2\n")
    with pytest.raises(ValueError, match=r"table\.tif: not a TIFF file, expected a TIFF stack"):
        read_stack(tmp_path / "table.tif")
    (tmp_path / "folder.tif").mkdir()
    with pytest.raises(IsADirectoryError, match=r"folder\.tif: is a folder"):
        read_stack(tmp_path / "folder.tif")
    with pytest.raises(ValueError, match=r"table\.tif: not a TIFF file"): LazyTiffStack(tmp_path / "table.tif")


def test_read_stack_warns_about_ignored_series(tmp_path):
    with tifffile.TiffWriter(tmp_path / "two.tif") as tw:
        tw.write(_stack(), photometric="minisblack")
        tw.write(np.zeros((4, 4), np.uint8))  # e.g. a thumbnail
    with pytest.warns(UserWarning, match=r"two\.tif: 2 image series found; reading only the first"):
        s = read_stack(tmp_path / "two.tif")
    np.testing.assert_array_equal(s, _stack())


# ---------------------------------------------------------------- localization tables

def test_thunderstorm_round_trip(tmp_path):
    df = _table()
    df["chi2"] = np.arange(5) / 3  # columns ThunderSTORM does not name are kept, after its own
    write_localizations(tmp_path / "l.csv", df)
    text = (tmp_path / "l.csv").read_text()
    assert text.splitlines()[0] == '"id","frame","x [nm]","y [nm]","sigma [nm]","intensity [photon]","chi2"'
    back = read_localizations(tmp_path / "l.csv")
    pd.testing.assert_frame_equal(back, df)  # floats come back exactly
    assert back.attrs["column_mapping"] == {c: c for c in df.columns if c != "chi2"}
    assert back.attrs["source"] == str(tmp_path / "l.csv")
    assert _leftovers(tmp_path) == []


def test_write_localizations_orders_columns_and_numbers_rows(tmp_path):
    df = _table()[["y [nm]", "intensity [photon]", "x [nm]", "frame"]]
    write_localizations(tmp_path / "l.csv", df)
    back = read_localizations(tmp_path / "l.csv")
    assert list(back.columns) == ["id", "frame", "x [nm]", "y [nm]", "intensity [photon]"]
    assert list(back["id"]) == [1, 2, 3, 4, 5]
    assert list(LOCALIZATION_COLUMNS[:4]) == ["id", "frame", "x [nm]", "y [nm]"]


def test_read_localizations_accepts_nm_suffixed_names_without_warning(tmp_path):
    (tmp_path / "l.csv").write_text("frame,x_nm,y_nm,sigma_nm\n1,10.5,20,100\n2,30,40,110\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = read_localizations(tmp_path / "l.csv")
    assert list(df.columns) == ["frame", "x [nm]", "y [nm]", "sigma [nm]"]
    assert df.attrs["column_mapping"] == {"frame": "frame", "x_nm": "x [nm]", "y_nm": "y [nm]",
                                          "sigma_nm": "sigma [nm]"}
    assert df["x [nm]"].tolist() == [10.5, 30.0]


def test_read_localizations_decode_names_frame_ix_is_0_based(tmp_path, caplog):
    (tmp_path / "d.csv").write_text("x,y,z,phot,frame_ix,prob,bg\n150.0,250.0,0,1500,0,0.9,12\n1,2,0,900,4,0.5,11\n")
    with pytest.warns(UserWarning, match=r"d\.csv: columns \['x', 'y'\] state no unit; read as \['x \[nm\]', 'y \[nm\]'\]"):
        with caplog.at_level("INFO", logger="dl4smlm.io"):
            df = read_localizations(tmp_path / "d.csv")
    assert df["frame"].tolist() == [1, 5] and df["frame"].dtype == np.int64
    assert list(df.columns) == ["frame", "x [nm]", "y [nm]", "intensity [photon]", "offset [photon]", "z", "prob"]
    assert df.attrs["column_mapping"] == {"frame_ix": "frame", "x": "x [nm]", "y": "y [nm]",
                                          "phot": "intensity [photon]", "bg": "offset [photon]"}
    assert "frame = frame_ix + 1" in caplog.text and "'x': 'x [nm]'" in caplog.text


def test_read_localizations_decode_header_units(tmp_path):
    body = "x,y,z,phot,frame_ix\n1.5,2.0,0,1500,0\n"
    header = '# DECODE EmitterSet\n# {"version": "0.10.0"}\n# {"xy_unit": "%s", "px_size": %s}\n'
    (tmp_path / "nm.csv").write_text(header % ("nm", "null") + body)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the header states the unit: nothing is assumed
        df = read_localizations(tmp_path / "nm.csv")
    assert df[["x [nm]", "y [nm]"]].values.tolist() == [[2.0, 1.5]]   # DECODE's x is the image row: our y
    (tmp_path / "px.csv").write_text(header % ("px", "[100.0, 110.0]") + body)
    df = read_localizations(tmp_path / "px.csv")
    assert df[["x [nm]", "y [nm]"]].values.tolist() == [[275.0, 200.0]]   # pixel centres at integer px; x row, px_size (row, col)
    (tmp_path / "px1.csv").write_text(header % ("px", "null") + body)
    with pytest.raises(ValueError, match=r"px1\.csv: the DECODE header gives x/y in px, but px_size is None"):
        read_localizations(tmp_path / "px1.csv")
    (tmp_path / "px3.csv").write_text(header % ("px", "[100, 100, 100]") + body)
    with pytest.raises(ValueError, match=r"px_size is \[100, 100, 100\]; expected one or two pixel sizes in nm"):
        read_localizations(tmp_path / "px3.csv")
    (tmp_path / "px0.csv").write_text(header % ("px", "100") + body)
    assert read_localizations(tmp_path / "px0.csv")[["x [nm]", "y [nm]"]].values.tolist() == [[250.0, 200.0]]


def test_read_localizations_other_separators_and_bom(tmp_path):
    (tmp_path / "t.tsv").write_text("\ufeffframe\tx [nm]\ty [nm]\n3\t1.5\t2.5\n", encoding="utf-8")
    df = read_localizations(tmp_path / "t.tsv")
    assert df.values.tolist() == [[3, 1.5, 2.5]]


def test_read_localizations_header_only_is_an_empty_table(tmp_path):
    (tmp_path / "h.csv").write_text('"id","frame","x [nm]","y [nm]"\n')
    df = read_localizations(tmp_path / "h.csv")
    assert len(df) == 0 and df["frame"].dtype == np.int64 and df["x [nm]"].dtype == np.float64


@pytest.mark.parametrize("text, message", [
    ("frame,x [nm]\n1,2\n", r"missing column 'y \[nm\]' \(or y_nm, ynm, ynano, y\); found columns \['frame', 'x \[nm\]'\]"),
    ("id,x,y\n1,2,3\n", r"missing column 'frame' \(or frame_ix\); found columns \['id', 'x', 'y'\]"),
    ("frame,x [px],y [px]\n1,2,3\n", r"missing columns 'x \[nm\]' .* and 'y \[nm\]' .*; found columns "
                                     r"\['frame', 'x \[px\]', 'y \[px\]'\]; positions are in pixels"),
    ("frame,x [nm],y [nm]\n1,2,3\n2,3,4\n3,abc,5\n", r"column 'x \[nm\]' has a non-numeric value 'abc' in data row 3"),
    ("frame,x_nm,y_nm,sigma_nm\n1,2,3,wide\n", r"column 'sigma_nm' has a non-numeric value 'wide' in data row 1"),
    ("frame,x [nm],y [nm]\n1,2,3\n2,,4\n", r"column 'x \[nm\]' has a missing or non-finite value \(nan\) in data row 2"),
    ("frame,x [nm],y [nm]\n1,2,inf\n", r"column 'y \[nm\]' has a missing or non-finite value \(inf\) in data row 1"),
    ("frame,x [nm],y [nm]\n0,2,3\n", r"column 'frame' has 0 in data row 1; ThunderSTORM frames are numbered from 1"),
    ("frame,x [nm],y [nm]\n1.5,2,3\n", r"column 'frame' has 1.5 in data row 1; ThunderSTORM frames are whole numbers"),
    ("frame_ix,x_nm,y_nm\n-1,2,3\n", r"column 'frame_ix' has -1 in data row 1; ThunderSTORM frames are numbered from 1"),
    ("\n\n", r"no table found \(the file holds only blank or comment lines\)"),
    ("# only a comment\n", r"no table found"),
    ('frame,x [nm],y [nm]\n1,2,3\n4,"5\n', r"not a valid CSV table"),
])
def test_read_localizations_errors(tmp_path, text, message):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ValueError, match=r"bad\.csv: " + message): read_localizations(tmp_path / "bad.csv")


def test_read_localizations_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none\.csv: no such file \(expected a localization table"):
        read_localizations(tmp_path / "none.csv")
    (tmp_path / "empty.csv").touch()
    with pytest.raises(ValueError, match=r"empty\.csv: empty file \(0 bytes\)"):
        read_localizations(tmp_path / "empty.csv")


def test_write_localizations_errors(tmp_path):
    with pytest.raises(TypeError, match=r"l\.csv \(table to write\): expected a pandas DataFrame, got dict"):
        write_localizations(tmp_path / "l.csv", {"frame": [1]})
    with pytest.raises(ValueError, match=r"l\.csv \(table to write\): missing column 'frame'"):
        write_localizations(tmp_path / "l.csv", _table().drop(columns="frame"))
    bad = _table()
    bad.loc[2, "x [nm]"] = np.nan
    with pytest.raises(ValueError, match=r"column 'x \[nm\]' has a missing or non-finite value \(nan\) in data row 3"):
        write_localizations(tmp_path / "l.csv", bad)
    assert list(tmp_path.iterdir()) == []


def test_write_localizations_accepts_alternative_names(tmp_path):
    df = pd.DataFrame({"frame_ix": [0, 2], "x_nm": [1.0, 2.0], "y_nm": [3.0, 4.0]}, index=[10, 20])
    write_localizations(tmp_path / "l.csv", df)
    assert (tmp_path / "l.csv").read_text() == '"id","frame","x [nm]","y [nm]"\n1,1,1.0,3.0\n2,3,2.0,4.0\n'


def test_write_localizations_failure_mid_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "l.csv"
    write_localizations(target, _table(seed=1))
    before = target.read_bytes()

    def broken_to_csv(self, f, **kwargs):
        f.write('"id","frame","x [nm]"\n1,1,')
        raise OSError("No space left on device")
    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_to_csv)
    with pytest.raises(OSError, match="No space left"): write_localizations(target, _table(seed=2))
    assert target.read_bytes() == before and _leftovers(tmp_path) == []


def test_lazy_stack_extra_checks(tmp_path):
    with tifffile.TiffWriter(tmp_path / "two.tif") as tw:
        tw.write(_stack(), photometric="minisblack", compression="zlib")
        tw.write(np.zeros((4, 4), np.uint8))
    with pytest.warns(UserWarning, match=r"two\.tif: 2 image series found; reading only the first"):
        s = read_stack(tmp_path / "two.tif")
    assert isinstance(s, LazyTiffStack)
    with pytest.raises(ValueError, match="cannot be a view"): np.asarray(s, copy=False)
    s.close()


def test_localization_tables_with_duplicate_columns_are_refused(tmp_path):
    df = pd.DataFrame([[1, 2.0, 3.0, 4.0]], columns=["frame", "x [nm]", "y [nm]", "x [nm]"])
    with pytest.raises(ValueError, match=r"duplicate column names \['x \[nm\]'\]"):
        write_localizations(tmp_path / "l.csv", df)


# ---------------------------------------------------------------- simulated data sets

from dl4smlm.simulate import SimulationConfig, simulate  # noqa: E402


@pytest.fixture(scope="module")
def sim():
    return simulate(SimulationConfig(frames=6, height=24, width=20, pixel_nm=100.0, density=2.0, photons=2000.0,
                                     photons_sd=500.0, background=20.0, camera="emccd", sigma_nm=110.0,
                                     structure="uniform", seed=3))


def test_simulation_round_trip(tmp_path, sim):
    out = io.save_simulation(tmp_path / "run", sim)
    assert out == tmp_path / "run" and sorted(p.name for p in out.iterdir()) == sorted(io.SIMULATION_FILES)
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["dl4smlm_version"] == __version__ and meta["config"] == json.loads(json.dumps(sim.config.to_dict()))
    assert meta["frames_shape"] == [6, 24, 20] and meta["ground_truth_rows"] == len(sim.ground_truth)
    back = io.load_simulation(out)
    assert isinstance(back, io.SimulationData) and isinstance(back.frames, np.memmap)
    assert back.frames.dtype == np.uint16
    np.testing.assert_array_equal(back.frames, sim.frames)
    assert back.config.to_dict() == sim.config.to_dict()
    expected = sim.ground_truth.reset_index(drop=True)
    pd.testing.assert_frame_equal(back.ground_truth[list(expected.columns)], expected, check_dtype=False)
    with tifffile.TiffFile(out / "frames.tif") as tif:  # the pixel size travels with the stack
        assert tif.pages[0].resolution == pytest.approx((10.0, 10.0))
    assert type(io.load_simulation(out, mmap=False).frames) is np.ndarray
    assert _leftovers(out) == []


def test_save_simulation_overwrites_only_when_asked(tmp_path, sim):
    io.save_simulation(tmp_path, sim)
    with pytest.raises(FileExistsError, match=r"already holds frames\.tif, ground_truth\.csv, simulation\.json; "
                                              r"pass overwrite=True"):
        io.save_simulation(tmp_path, sim)
    other = simulate(SimulationConfig.from_dict({**sim.config.to_dict(), "seed": 4}))
    io.save_simulation(tmp_path, other, overwrite=True)
    np.testing.assert_array_equal(io.load_simulation(tmp_path).frames, other.frames)


def test_save_simulation_checks_everything_before_writing(tmp_path, sim):
    class BrokenConfig:
        pixel_nm = 100.0
        def to_dict(self): raise RuntimeError("config cannot be serialised")
    class Stand_in:  # a simulation whose config fails
        frames, ground_truth, config = sim.frames, sim.ground_truth, BrokenConfig()
    with pytest.raises(RuntimeError, match="config cannot be serialised"): io.save_simulation(tmp_path / "run", Stand_in)
    assert not (tmp_path / "run").exists()
    Stand_in.config = sim.config
    Stand_in.ground_truth = sim.ground_truth.drop(columns="frame")
    with pytest.raises(ValueError, match=r"ground_truth\.csv \(table to write\): missing column 'frame'"):
        io.save_simulation(tmp_path / "run", Stand_in)
    assert not (tmp_path / "run").exists()


def test_interrupted_save_is_reported_on_load(tmp_path, sim, monkeypatch):
    io.save_simulation(tmp_path, sim)
    def broken_write_json(path, obj):
        raise OSError("No space left on device")
    monkeypatch.setattr(io, "write_json", broken_write_json)
    with pytest.raises(OSError): io.save_simulation(tmp_path, sim, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.tif", "ground_truth.csv"]
    with pytest.raises(FileNotFoundError, match=r"missing simulation\.json; .* without it the save did not finish"):
        io.load_simulation(tmp_path)


@pytest.mark.parametrize("name", io.SIMULATION_FILES)
def test_load_simulation_names_the_missing_file(tmp_path, sim, name):
    io.save_simulation(tmp_path, sim)
    (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path.name}: missing {name}; a saved simulation holds "
                                                r"frames\.tif, ground_truth\.csv, simulation\.json"):
        io.load_simulation(tmp_path)


def test_load_simulation_errors(tmp_path, sim):
    with pytest.raises(FileNotFoundError, match=r"nothing: no such folder \(expected a saved simulation"):
        io.load_simulation(tmp_path / "nothing")
    io.save_simulation(tmp_path, sim)
    write_stack(tmp_path / "frames.tif", sim.frames[:4])
    with pytest.raises(ValueError, match=r"frames\.tif shape is \[4, 24, 20\] but simulation\.json records "
                                         r"\[6, 24, 20\]; the folder mixes two saves"):
        io.load_simulation(tmp_path)
    write_json(tmp_path / "simulation.json", {"dl4smlm_version": __version__})
    with pytest.raises(ValueError, match=r"simulation\.json: expected an object with a 'config' object"):
        io.load_simulation(tmp_path)
