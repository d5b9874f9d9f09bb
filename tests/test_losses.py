"Tests of dl4smlm.losses: hand-computed values, the kernel, the weights, λ's direction, bad input."
import math
import warnings

import numpy as np
import pytest
import torch
from fastcore.test import test_close as assert_close
from fastcore.test import test_eq as assert_eq
from scipy.ndimage import correlate

from dl4smlm.losses import L1L2Loss, WeightedMAELoss, WeightedMSELoss, emitter_weights
from dl4smlm.simulate import render_heatmap

torch.set_num_threads(2)
LOSSES = [L1L2Loss, WeightedMSELoss, WeightedMAELoss]


def test_kernel_centred_symmetric_normalised():
    k = L1L2Loss().kernel[0, 0].numpy()
    assert_eq(k.shape, (7, 7))
    assert_close(float(k.sum()), 1.0, eps=1e-6)
    assert_eq(np.unravel_index(k.argmax(), k.shape), (3, 3))
    assert_eq(k, k[::-1, :]); assert_eq(k, k[:, ::-1]); assert_eq(k, k.T)
    r2 = (np.arange(7)[:, None] - 3) ** 2 + (np.arange(7)[None, :] - 3) ** 2
    expected = np.exp(-r2 / 2); expected /= expected.sum()
    assert_close(k, expected.astype(np.float32), eps=1e-7)
    assert_close(float(L1L2Loss(sigma=2.0, size=9).kernel.sum()), 1.0, eps=1e-6)


def test_blur_is_same_padded_and_centred():
    loss = L1L2Loss()
    k = loss.kernel[0, 0]
    x = torch.zeros(1, 1, 11, 11); x[0, 0, 5, 5] = 1
    assert_close(loss.blur(x)[0, 0, 2:9, 2:9], k, eps=1e-7)          # centred impulse → the kernel, centred
    x = torch.zeros(1, 1, 11, 11); x[0, 0, 0, 0] = 1
    y = loss.blur(x)
    assert_eq(y.shape, x.shape)                                        # 'same' size
    assert_close(y[0, 0, :4, :4], k[3:, 3:], eps=1e-7)                 # zero padding clips the corner


def test_l1l2_equals_direct_computation():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(2, 1, 9, 12)).astype(np.float32), rng.random((2, 1, 9, 12)).astype(np.float32)
    r2 = (np.arange(7)[:, None] - 3) ** 2 + (np.arange(7)[None, :] - 3) ** 2
    g = np.exp(-r2 / 2); g /= g.sum()
    blur = lambda a: np.stack([correlate(a[i, 0].astype(np.float64), g, mode="constant") for i in range(len(a))])
    mse = np.mean((blur(p) - blur(t)) ** 2)
    for lam in (0.5, 1.0, 3.0):
        expected = mse + np.abs(p).mean() / lam
        assert_close(L1L2Loss(lam=lam)(torch.from_numpy(p), torch.from_numpy(t)).item(), expected, eps=1e-5)
    assert_close(L1L2Loss(lam=math.inf)(torch.from_numpy(p), torch.from_numpy(t)).item(), mse, eps=1e-5)
    heat = torch.from_numpy(blur(t)[:, None].astype(np.float32))
    assert_close(L1L2Loss(blur_target=False)(torch.from_numpy(p), heat).item(), mse + np.abs(p).mean(), eps=1e-5)


def test_l1l2_hand_computed_tiny():
    # a spike of 3 against a spike of 1 at the centre of a 7×7 map, λ = 2: the blurred difference is 2·g
    p, t = torch.zeros(1, 1, 7, 7), torch.zeros(1, 1, 7, 7)
    p[..., 3, 3], t[..., 3, 3] = 3.0, 1.0
    g = L1L2Loss().kernel[0, 0].double()
    expected = (2.0 ** 2) * float((g ** 2).sum()) / 49 + 3.0 / 49 / 2
    assert_close(L1L2Loss(lam=2.0)(p, t).item(), expected, eps=1e-7)


def test_heatmap_target_equivalence():
    rng = np.random.default_rng(1)
    spikes = np.zeros((2, 1, 24, 24), np.float32)
    spikes[0, 0, 5, 7] = spikes[1, 0, 12, 20] = spikes[1, 0, 23, 0] = 100
    pred = torch.from_numpy(rng.random((2, 1, 24, 24)).astype(np.float32))
    heat = torch.from_numpy(render_heatmap(spikes, sigma_px=1.0, scale=1.0))
    assert_close(L1L2Loss()(pred, torch.from_numpy(spikes)), L1L2Loss(blur_target=False)(pred, heat), eps=1e-4)


def test_weighted_hand_computed():
    t = torch.tensor([[[[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]]]])           # one emitter pixel of six
    p = torch.tensor([[[[1.0, 1.0, 0.0], [0.0, -2.0, 0.0]]]])
    w = torch.tensor([[[[1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]]])            # balanced: 5 background / 1 emitter
    assert_eq(emitter_weights(t), w)
    lam = 4.0
    # mean(w·err) + mean|p|/λ: the weights on the data term only
    mse = (1 * 1 + 5 * 1 + 1 * 4) / 6 + (1 + 1 + 2) / 6 / 4
    mae = (1 * 1 + 5 * 1 + 1 * 2) / 6 + (1 + 1 + 2) / 6 / 4
    assert_close(WeightedMSELoss(lam=lam)(p, t).item(), mse, eps=1e-6)
    assert_close(WeightedMAELoss(lam=lam)(p, t).item(), mae, eps=1e-6)
    assert_close(WeightedMSELoss(lam=math.inf, emitter_weight=2.0)(p, t).item(), (1 + 2 * 1 + 4) / 6, eps=1e-6)


def test_weights_change_the_loss_as_documented():
    t = torch.zeros(1, 1, 6, 6); t[0, 0, 2, 2] = t[0, 0, 4, 1] = 3.0          # 2 emitter pixels, 34 background
    for cls in (WeightedMSELoss, WeightedMAELoss):
        for weight, ratio in ((None, 34 / 2), (7.0, 7.0), (1.0, 1.0)):
            loss = cls(lam=math.inf, emitter_weight=weight)
            on, off = t.clone(), t.clone()
            on[0, 0, 2, 2] += 0.5; off[0, 0, 0, 5] += 0.5                # the same error on / off an emitter
            assert_close((loss(on, t) / loss(off, t)).item(), ratio, eps=1e-4)
    # threshold: only target values above it are emitter pixels
    t2 = torch.tensor([[[[0.1, 1.0], [0.0, 0.0]]]])
    assert_eq(emitter_weights(t2, threshold=0.5), torch.tensor([[[[1.0, 3.0], [1.0, 1.0]]]]))
    assert_eq(emitter_weights(t2), torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]]]))  # 2 vs 2: balanced weight 1
    assert_eq(emitter_weights(torch.zeros(1, 1, 3, 3)), torch.ones(1, 1, 3, 3))   # no emitters: all 1
    with pytest.raises(ValueError, match="emitter_weight"): emitter_weights(t2, emitter_weight=-1.0)


def test_optimum_of_weighted_mse_is_the_soft_threshold():
    "The gradient of the weighted MSE vanishes at p = max(t − 1/(2λw), 0) on the pixels where that is positive."
    t = torch.zeros(1, 1, 8, 8); t[0, 0, 3, 3], t[0, 0, 5, 6], t[0, 0, 1, 1] = 4.0, 1.5, 0.2
    for lam, weight in ((0.5, None), (2.0, None), (0.5, 1.0), (0.2, 3.0)):
        loss = WeightedMSELoss(lam=lam, emitter_weight=weight)
        w = emitter_weights(t, weight)
        p = (t - 1 / (2 * lam * w)).clamp(min=0).requires_grad_(True)
        loss(p, t).backward()
        assert_close(p.grad[p.detach() > 0], torch.zeros(int((p.detach() > 0).sum())), eps=1e-6)


@pytest.mark.parametrize("cls", [WeightedMSELoss, WeightedMAELoss])
def test_weighted_losses_keep_emitters_at_the_default_lambda(cls):
    "The perfect prediction beats all zeros at the default λ; an emitter pixel survives when w > 1/λ and not when w < 1/λ."
    t = torch.zeros(1, 1, 16, 16); t[0, 0, 4, 4], t[0, 0, 10, 12] = 15.9, 6.0
    assert cls()(t, t) < cls()(torch.zeros_like(t), t)
    values = torch.linspace(0, 20, 201)
    for lam, weight in ((1.0, 2.0), (0.25, 5.0), (1.0, 0.5), (0.25, 3.0)):
        loss = cls(lam=lam, emitter_weight=weight)
        costs = [loss(t.index_put((torch.tensor([0]), torch.tensor([0]), torch.tensor([4]), torch.tensor([4])), v), t).item() for v in values]
        best = values[int(np.argmin(costs))].item()
        shrink = 1 / (2 * lam * weight) if cls is WeightedMSELoss else 0.0
        if weight > 1 / lam: assert abs(best - (15.9 - shrink)) < 0.11, (lam, weight, best)
        else: assert best == 0.0 or cls is WeightedMSELoss, (lam, weight, best)


def test_optimum_of_l1l2_for_one_spike():
    "One isolated spike of A: the L1L2 optimum along the spike is A − 1/(2λ·Σg²)."
    A = 100.0
    t = torch.zeros(1, 1, 15, 15); t[0, 0, 7, 7] = A
    g2 = float((L1L2Loss().kernel ** 2).sum())
    for lam in (0.5, 1.0, 4.0):
        a = torch.tensor(A - 1 / (2 * lam * g2), requires_grad=True)
        p = torch.zeros(1, 1, 15, 15).index_put((torch.tensor([0]), torch.tensor([0]), torch.tensor([7]), torch.tensor([7])), a)
        L1L2Loss(lam=lam)(p, t).backward()
        assert abs(a.grad.item()) < 1e-6


def _optimise(loss, start, target, steps=200, lr=0.1):
    p = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    for _ in range(steps):
        value = loss(p, target)
        opt.zero_grad(); value.backward(); opt.step()
    return p.detach()


@pytest.mark.parametrize("cls", LOSSES)
def test_lambda_direction(cls):
    "Lower λ → sparser map (fewer pixels above 1, less mass); higher λ → more of the blurred signal kept."
    spikes = np.zeros((1, 1, 32, 32), np.float32)
    for r, c in [(6, 6), (8, 24), (20, 12), (26, 27)]: spikes[0, 0, r, c] = 100
    heat = torch.from_numpy(render_heatmap(spikes, sigma_px=1.0, scale=1.0))
    target = torch.from_numpy(spikes) if cls is L1L2Loss else heat
    start = torch.from_numpy(render_heatmap(spikes, sigma_px=3.0, size=15, scale=1.0))  # a wide, diffraction-limited picture
    stats = []
    for lam in (0.2, 2.0, 20.0):
        p = _optimise(cls(lam=lam), start, target).abs()
        stats.append((int((p > 1).sum()), p.sum().item()))
    pixels, mass = zip(*stats)
    assert list(pixels) == sorted(pixels) and pixels[0] < pixels[-1], stats
    assert all(b >= a * 0.98 for a, b in zip(mass, mass[1:])) and mass[0] < mass[-1], stats


@pytest.mark.parametrize("cls", LOSSES)
def test_gradients_and_dtypes(cls):
    p = torch.randn(2, 1, 10, 10, dtype=torch.float64, requires_grad=True)
    t = torch.zeros(2, 1, 10, 10, dtype=torch.float64); t[0, 0, 4, 4] = 5
    value = cls()(p, t)
    assert value.dtype == torch.float64 and value.ndim == 0
    value.backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", LOSSES)
def test_bad_input(cls):
    for lam in (0, -1.0, float("nan"), True, "1"):
        with pytest.raises(ValueError, match="lam must be a number > 0"): cls(lam=lam)
    assert cls(lam=math.inf).lam == math.inf
    with pytest.raises(ValueError, match="same shape"): cls()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"): cls()(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"): cls()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_repr_shows_lambda():
    assert "lam=0.5" in repr(L1L2Loss(lam=0.5)) and "lam=2" in repr(WeightedMAELoss(lam=2))


def test_spike_targets_are_scaled_so_l1l2_keeps_their_peaks():
    "Spike targets are Deep-STORM's ×100: an L1L2 model trained a few steps on them outputs clear peaks (spikes of 1 would be shrunk to 0)."
    from dl4smlm.data import SimulatedDataset
    from dl4smlm.models import FIDSTORM
    from dl4smlm.simulate import SimulationConfig
    from dl4smlm.train import make_loss
    ds = SimulatedDataset(SimulationConfig(height=16, width=16, density=3.0), 16, upsampling=2, patch_size=8, target="spikes",
                          min_emitters=1, seed=1)
    x, y = (torch.stack(v) for v in zip(*[ds[k] for k in range(len(ds))]))
    assert set(torch.unique(y).tolist()) <= {0.0, 100.0, 200.0}
    torch.manual_seed(0)
    model, loss = FIDSTORM(2, blocks=2, width=16), make_loss("l1l2", target="spikes")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        value = loss(model(x), y)
        opt.zero_grad(); value.backward(); opt.step()
    with torch.no_grad(): out = model(x)
    g = loss.blur(out)
    assert out.max() > 10 and (g * (y > 0)).sum() > 0.3 * (loss.blur(y) * (y > 0)).sum(), (out.max().item(),)


def test_faint_user_targets_warn():
    from dl4smlm.data import ImageDataset
    frames = np.random.default_rng(0).poisson(20, (4, 8, 8)).astype(np.float32)
    faint = np.zeros((4, 32, 32), np.float32); faint[:, 10, 10] = 1.0
    with pytest.warns(UserWarning, match="peak at 1; .*scale them"): ImageDataset(frames, faint, patch_size=8, min_emitters=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageDataset(frames, faint * 100, patch_size=8, min_emitters=0)
