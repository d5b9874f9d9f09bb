"""The bioimage.io package says how to tile (an output halo = the model's receptive field, measured as our tiled prediction
assumes it) and who uploads it (an author's github_user, without which the zoo refuses the upload; checked offline)."""
import numpy as np
import pytest
import yaml

from dl4smlm.export import export_checkpoint, receptive_radius, validate_bioimageio
from dl4smlm.models import get_model


def test_receptive_radius_is_where_the_gradient_reaches():
    r = {(n, f): receptive_radius(get_model(n, upsampling=f, seed=0)) for n, f in (("deep-storm", 4), ("fid-storm", 8), ("srcnn", 4))}
    assert 2 <= r[("srcnn", 4)] < 16     # its bicubic upsampling reaches beyond the 13 fine pixels of its convolutions
    assert r[("fid-storm", 8)] == 12 and r[("deep-storm", 4)] == 6   # the radii the tiling chapter measures (overlap 16 > each)


def test_package_has_halo_and_github_user(tmp_path):
    with pytest.raises(ValueError, match=r"github_user: expected a GitHub user name"):
        export_checkpoint("fid-storm-x4-emccd", tmp_path / "bad", formats="onnx", bioimageio=True, github_user="not a name")
    r = export_checkpoint("fid-storm-x4-emccd", tmp_path / "out", formats="onnx", bioimageio=True, github_user="dl4smlm-dev")
    pkg = tmp_path / "out" / "bioimageio"
    rdf = yaml.safe_load((pkg / "rdf.yaml").read_text())
    assert rdf["authors"][0]["github_user"] == "dl4smlm-dev"
    out_axes = {a["id"]: a for a in rdf["outputs"][0]["axes"] if a["type"] == "space"}
    in_axes = {a["id"]: a for a in rdf["inputs"][0]["axes"] if a["type"] == "space"}
    radius = receptive_radius(get_model("fid-storm", upsampling=4))
    assert out_axes["x"]["halo"] == out_axes["y"]["halo"] == 4 * radius      # fine pixels
    assert in_axes["x"]["size"]["min"] > 2 * radius                          # a tile larger than its two halos
    assert validate_bioimageio(pkg, trusted_github_user="dl4smlm-dev") is None
    with pytest.warns(UserWarning, match="without an author's github_user"):
        export_checkpoint("fid-storm-x4-emccd", tmp_path / "anon", formats="onnx", bioimageio=True)
