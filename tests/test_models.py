"Tests of dl4smlm.models: shape contract, gradients, parameter and MAC counts, registry, determinism."
import pytest
import torch
from fastcore.test import test_close as assert_close
from fastcore.test import test_eq as assert_eq
from torch import nn

from dl4smlm.models import (DeepSTORM, DRLSTORM, FIDSTORM, SkipSTORM, SMLMModel, SRCNN, USTORM, count_macs,
                            count_parameters, get_model, list_models, optimize_for_inference)

torch.set_num_threads(2)
NAMES = ["srcnn", "deep-storm", "skip-storm", "u-storm", "drl-storm", "fid-storm"]

# Documented parameter counts (f = 8) and GMAC per 64×64 frame (f = 8, f = 4).
DOCUMENTED = {
    "srcnn": (8_129, 2.106, 0.526),
    "deep-storm": (1_366_208, 24.243, 6.061),
    "skip-storm": (1_366_473, 24.313, 6.078),
    "u-storm": (150_640, 13.065, 3.266),
    "drl-storm": (1_589_376, 25.154, 6.971),
    "fid-storm": (393_680, 2.154, 1.833),
}


def test_registry_names():
    assert_eq(list_models(), NAMES)
    classes = [SRCNN, DeepSTORM, SkipSTORM, USTORM, DRLSTORM, FIDSTORM]
    for name, cls in zip(NAMES, classes):
        model = get_model(name, upsampling=4)
        assert type(model) is cls and model.name == name and model.upsampling == 4
    for alias in ("DeepSTORM", "deep_storm", " Deep-STORM "):
        assert type(get_model(alias)) is DeepSTORM
    with pytest.raises(ValueError, match="expected one of"): get_model("decode")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("factor", [4, 8])
@pytest.mark.parametrize("size", [(16, 16), (37, 53), (5, 3)])
def test_shape_contract(name, factor, size):
    model = get_model(name, upsampling=factor, seed=0).eval()
    x = torch.randn(2, 1, *size)
    with torch.no_grad(): y = model(x)
    assert_eq(y.shape, (2, 1, factor * size[0], factor * size[1]))
    assert y.dtype == x.dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_features_named_and_end_in_output(name):
    model = get_model(name, upsampling=4, seed=0).eval()
    x = torch.randn(1, 1, 9, 11)
    with torch.no_grad():
        maps, y = model.features(x), model(x)
    assert_eq(tuple(maps), tuple(model.feature_names))
    assert_eq(list(maps)[-1], "output")
    assert torch.equal(maps["output"], y)
    assert all(v.ndim == 4 and v.shape[0] == 1 for v in maps.values())


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name):
    model = get_model(name, upsampling=4, seed=0).train()
    model(torch.randn(2, 1, 8, 8)).square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("name", NAMES)
def test_documented_counts(name):
    params, gmac8, gmac4 = DOCUMENTED[name]
    assert_eq(count_parameters(get_model(name, upsampling=8)), params)
    assert_close(count_macs(get_model(name, upsampling=8)) / 1e9, gmac8, eps=2e-3)
    assert_close(count_macs(get_model(name, upsampling=4)) / 1e9, gmac4, eps=2e-3)


def test_published_reference_numbers():
    "REFERENCE §5: Deep-STORM ≈ 1.37 M parameters, ≈ 24 GMAC (f = 8), ≈ 6 (f = 4); FID-STORM ≈ 0.39 M, ≈ 2.2 GMAC."
    assert abs(count_parameters(DeepSTORM()) - 1.37e6) < 0.01e6
    assert abs(count_macs(DeepSTORM()) / 1e9 - 24) < 0.5 and abs(count_macs(DeepSTORM(4)) / 1e9 - 6) < 0.1
    assert abs(count_parameters(FIDSTORM()) - 0.39e6) < 0.01e6
    assert abs(count_macs(FIDSTORM()) / 1e9 - 2.2) < 0.1


def test_count_macs_restores_mode():
    model = DeepSTORM(4).train()
    count_macs(model, 16, 16)
    assert model.training


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output(name):
    x = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    outs = []
    for _ in range(2):
        model = get_model(name, upsampling=4, seed=7).eval()
        with torch.no_grad(): outs.append(model(x))
    assert torch.equal(outs[0], outs[1])
    other = get_model(name, upsampling=4, seed=8).eval()
    with torch.no_grad(): assert not torch.equal(other(x), outs[0])


def test_seed_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    get_model("u-storm", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_no_batchnorm_on_output_and_centred_kernels():
    "REFERENCE §8: no BatchNorm after the last convolution; every kernel odd-sized with symmetric 'same' padding."
    for name in NAMES:
        model = get_model(name, upsampling=4).eval()
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                k, p = m.kernel_size, m.padding
                assert k[0] % 2 == 1 and k[1] % 2 == 1 and p == (k[0] // 2, k[1] // 2), f"{name}: {m}"
        executed = []
        hooks = [m.register_forward_hook(lambda m, i, o: executed.append(m))
                 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        with torch.no_grad(): model(torch.zeros(1, 1, 8, 8))
        for h in hooks: h.remove()
        assert isinstance(executed[-1], nn.Conv2d) and executed[-1].out_channels == 1, f"{name}: ends in {executed[-1]}"


def test_centred_response():
    "A centred impulse gives a response symmetric under a 180° rotation when the weights are point-symmetric."
    model = SRCNN(1).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d): m.weight.copy_((m.weight + m.weight.flip(-1, -2)) / 2)
        x = torch.zeros(1, 1, 15, 15); x[..., 7, 7] = 1
        y = model(x)
    assert_close(y, y.flip(-1, -2), eps=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"): DeepSTORM()(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"): FIDSTORM().features(torch.zeros(8, 8))
    with pytest.raises(ValueError, match="power of two"): FIDSTORM(upsampling=6)
    with pytest.raises(ValueError, match="power of two"): get_model("fid-storm", upsampling=3)
    for bad in (0, -4, 2.5, True, "8"):
        with pytest.raises(ValueError, match="positive integer"): DeepSTORM(upsampling=bad)


@pytest.mark.parametrize("factor", [1, 2, 3, 5])
def test_other_factors(factor):
    for name in ["srcnn", "deep-storm", "skip-storm", "u-storm", "drl-storm"]:
        with torch.no_grad(): y = get_model(name, upsampling=factor).eval()(torch.zeros(1, 1, 7, 9))
        assert_eq(y.shape, (1, 1, 7 * factor, 9 * factor))
    if factor in (2,):
        with torch.no_grad(): assert_eq(FIDSTORM(factor).eval()(torch.zeros(1, 1, 7, 9)).shape, (1, 1, 14, 18))


def test_fid_storm_stages():
    assert_eq(len(FIDSTORM(8).ups), 3)
    assert_eq([s[0].out_channels for s in FIDSTORM(8).ups], [32, 16, 1])
    assert_eq([s[0].out_channels for s in FIDSTORM(4).ups], [32, 1])
    assert_eq([s[0].out_channels for s in FIDSTORM(16).ups], [32, 16, 8, 1])


def test_padding_does_not_shift_the_grid():
    "Deep-STORM on a frame that needs padding equals the top-left crop of the model on a larger frame with zero fill."
    model = DeepSTORM(4).eval()
    x = torch.randn(1, 1, 37, 53)
    big = torch.zeros(1, 1, 38, 54); big[..., :37, :53] = x      # 38·4 = 152, 54·4 = 216: the padded grid
    with torch.no_grad():
        assert_close(model(x), model(big)[..., :148, :212], eps=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_optimize_for_inference(name):
    model = get_model(name, upsampling=4, seed=0)
    model.train()
    with torch.no_grad():
        for _ in range(2): model(torch.randn(4, 1, 8, 8))           # move BatchNorm statistics
    model.eval()
    fast = optimize_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == (name not in ("srcnn",))
    x = torch.randn(2, 1, 10, 13)
    with torch.inference_mode():
        assert_close(fast(x), model(x), eps=1e-3 * max(1.0, model(x).abs().max().item()))
    assert isinstance(fast, SMLMModel) and not fast.training
