"""Every bundled model still loads, from its name, and computes what it computed before the package was rearranged
(issue 22): the checkpoints hold tensors and plain data only, no class paths, so moving code cannot break them."""
import pickletools, zipfile

import numpy as np
import pytest
import torch

from dl4smlm.checkpoint import bundled_path, load_model
from dl4smlm.pretrained import PRETRAINED, bundled_models

# sum, sum of |output| and output[123] (flattened) on two fixed 16 × 16 frames, recorded with dl4smlm before the redesign
BEFORE = {"fid-storm-x8-emccd": (261.3460752131495, 273.0200476406181, -4.999310476705432e-05),
          "fid-storm-x4-emccd": (136.6324090767186, 155.09205364175142, -0.000934198556933552),
          "deep-storm-x4-emccd": (461.717164059286, 466.06144399091136, 0.005648970603942871),
          "fid-storm-x8-scmos": (3012.6165386918283, 3139.318033682067, -4.819114110432565e-05),
          "fid-storm-x4-scmos": (4911.308056704179, 5239.1744544138755, -0.012095416896045208),
          "deep-storm-x4-scmos": (2796.694541146193, 2851.0607151415606, 0.0009328648447990417)}

def test_every_bundled_model_is_checked():
    assert sorted(bundled_models()) == sorted(BEFORE) == sorted(PRETRAINED)

@pytest.mark.parametrize("name", sorted(BEFORE))
def test_bundled_model_predicts_as_before(name):
    with zipfile.ZipFile(bundled_path(name)) as z:     # plain data: the classes pickled by path are torch's, none of dl4smlm's
        pickled = [z.read(n) for n in z.namelist() if n.endswith(".pkl")]
    classes = {arg.split()[0] for data in pickled for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
    assert classes and not any(c.startswith("dl4smlm") for c in classes), classes
    model = load_model(name)
    frames = np.random.default_rng(0).uniform(90, 400, (2, 16, 16)).astype(np.float32)
    with torch.no_grad():
        y = model(torch.from_numpy(np.stack([model.normalizer(f) for f in frames]))[:, None].float()).double().numpy()
    got = (float(y.sum()), float(np.abs(y).sum()), float(y.ravel()[123]))
    np.testing.assert_allclose(got[:2], BEFORE[name][:2], rtol=1e-5)
    np.testing.assert_allclose(got[2], BEFORE[name][2], rtol=1e-4, atol=1e-7)
