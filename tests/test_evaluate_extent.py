"""evaluate refuses tables it would score wrongly (issue 23): a table in pixels, a frame base that does not fit the stack,
a field that does not hold the ground truth, localizations outside the field. Never a Jaccard of ~0 as a result."""
import numpy as np
import pandas as pd
import pytest

from dl4smlm.cli import main
from dl4smlm.evaluate import assess
from dl4smlm.tables import write_localizations


def _truth(n=200, seed=0, field=6400.0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"frame": rng.integers(1, 11, n), "x [nm]": rng.uniform(0, field, n), "y [nm]": rng.uniform(0, field, n)})


def test_a_table_in_pixels_is_refused_not_scored():
    gt = _truth()
    px = gt.assign(**{"x [nm]": gt["x [nm]"] / 100 - 0.5, "y [nm]": gt["y [nm]"] / 100 - 0.5})   # a bare x, y table in px
    for pixel in (100.0, None):   # with the pixel size (the frame in px) or from the extents alone
        with pytest.raises(ValueError, match=r"the frame's size in pixels.*the table is in pixels.*--pixel-nm"):
            assess(gt, px, (6400, 6400), pixel_nm=pixel)
    assert assess(gt, gt, (6400, 6400), pixel_nm=100.0)["jaccard_pct"] == 100.0   # nm tables pass


def test_frame_base_field_and_outside_points_are_refused():
    gt = _truth()
    with pytest.raises(ValueError, match=r"frame 11, but the stack has 10 frames.*counts its frames from 0"):
        assess(gt, gt.assign(frame=gt["frame"] + 1), (6400, 6400), n_frames=10)
    with pytest.raises(ValueError, match=r"field_nm: the field 24 × 24 nm holds .* give the field's size in nm"):
        assess(gt, gt, (24, 24))
    far = gt.assign(**{"x [nm]": gt["x [nm]"] + 3000})
    with pytest.raises(ValueError, match=r"lie more than 250 nm outside the 6400 × 6400 nm field"):
        assess(gt, far, (6400, 6400))


def test_cli_refuses_a_pixel_table(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "sim"), "--frames", "3", "--size", "32", "--seed", "1"]) == 0
    gt = pd.read_csv(tmp_path / "sim" / "ground_truth.csv")
    pd.DataFrame({"frame": gt["frame"], "x": gt["x [nm]"] / 100 - 0.5, "y": gt["y [nm]"] / 100 - 0.5}).to_csv(tmp_path / "px.csv", index=False)
    with pytest.raises(SystemExit) as e: main(["evaluate", str(tmp_path / "sim" / "ground_truth.csv"), str(tmp_path / "px.csv")])
    assert e.value.code == 2 and "the table is in pixels" in capsys.readouterr().err
