"""Augmentation: flips, intensity jitter and zoom move image and labels together, within range."""
from __future__ import annotations

import math

import pytest
import torch

from napari_medseg.core.config import TrainConfig
from napari_medseg.core.sampling import augment_batch


def test_augment_keeps_labels_valid_and_is_seeded():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x = torch.randn(4, 2, 12, 12, 12)
    y = torch.randint(-1, 3, (4, 12, 12, 12))
    a = augment_batch(x.clone(), y.clone(), gen=g1, p_rotate=1.0)
    b = augment_batch(x.clone(), y.clone(), gen=g2, p_rotate=1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert set(torch.unique(a[1]).tolist()) <= {-1, 0, 1, 2}
    assert a[0].shape == x.shape and torch.isfinite(a[0]).all()


def test_intensity_jitter_sets_the_range_of_scale_and_shift():
    # A constant patch passes flips and gamma unchanged: what is left is v * scale + shift,
    # with scale in 1 +- s and shift in +- s, so 2 * scale + shift lies in 2 +- 3s.
    x = torch.full((400, 2, 4, 4), 2.0)
    y = torch.zeros(400, 4, 4, dtype=torch.long)
    seen = {}
    for s in (0.0, 0.15, 0.3):
        xa, _ = augment_batch(x.clone(), y.clone(), gen=torch.Generator().manual_seed(1),
                              p_rotate=0.0, intensity=s)
        v = xa[:, :, 0, 0]
        assert torch.all(xa == xa[:, :, :1, :1])  # still constant per patch and channel
        assert float((v - 2).abs().max()) <= 3 * s + 1e-5
        seen[s] = float((v - 2).abs().max())
    assert seen[0.0] == 0.0
    for s in (0.15, 0.3):  # 800 draws reach near the bounds: the jitter is not fixed at 0.15
        assert seen[s] > 0.8 * 3 * s


def test_intensity_jitter_is_checked():
    with pytest.raises(ValueError, match="intensity_jitter must be in"):
        TrainConfig(intensity_jitter=1.5)


def test_flip_moves_image_and_label_together():
    x = torch.zeros(8, 1, 6, 6)
    x[:, :, 0, 0] = 1
    y = torch.zeros(8, 6, 6, dtype=torch.long)
    y[:, 0, 0] = 1
    gen = torch.Generator().manual_seed(0)
    xa, ya = augment_batch(x, y, gen=gen, p_rotate=0.0)
    for i in range(8):
        peak = torch.nonzero(xa[i, 0] == xa[i, 0].max())[0]
        assert ya[i, peak[0], peak[1]] == 1


def _square_batch(b: int = 16, n: int = 64, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A centred square, as a one-channel image (0/1) and as class-1 labels."""
    y = torch.zeros(b, n, n, dtype=torch.long)
    lo = (n - side) // 2
    y[:, lo:lo + side, lo:lo + side] = 1
    return y[:, None].float(), y


def test_zoom_scales_the_labels_within_the_range_and_keeps_the_image_in_register():
    s = 0.4
    x, y = _square_batch()
    xa, ya = augment_batch(x.clone(), y.clone(), gen=torch.Generator().manual_seed(0),
                           p_rotate=0.0, intensity=0.0, scale=s, p_scale=1.0)
    ratios = (ya == 1).sum((1, 2)).float() / (y == 1).sum((1, 2)).float()
    # Area goes with the factor squared; allow one voxel's rim of rounding on the 16-square.
    assert float(ratios.min()) >= (1 / (1 + s)) ** 2 * 0.85
    assert float(ratios.max()) <= (1 + s) ** 2 * 1.15
    assert float(ratios.min()) < 0.8 and float(ratios.max()) > 1.25  # both ways, not fixed
    for i in range(len(ya)):
        labelled = ya[i] >= 0
        agree = ((xa[i, 0] > 0.5) == (ya[i] == 1))[labelled].float().mean()
        assert agree > 0.99
        # Shrinking samples a field wider than the patch: what comes from outside it is
        # unlabelled, never background the patch did not show.
        if ratios[i] < 1:
            assert bool((~labelled).any())
        elif ratios[i] > 1:  # zoomed in: every voxel comes from inside the patch
            assert bool(labelled.all())


def test_zoom_off_changes_nothing_and_p_scale_picks_the_fraction():
    x, y = _square_batch(b=200)
    xa, ya = augment_batch(x.clone(), y.clone(), gen=torch.Generator().manual_seed(1),
                           p_rotate=0.0, intensity=0.0, scale=0.0, p_scale=1.0)
    assert torch.equal(ya, y)
    xa, ya = augment_batch(x.clone(), y.clone(), gen=torch.Generator().manual_seed(1),
                           p_rotate=0.0, intensity=0.0, scale=0.3, p_scale=0.3)
    changed = (ya != y).flatten(1).any(1).float().mean()
    assert 0.2 < float(changed) < 0.4


def test_zoom_3d_keeps_labels_valid_and_is_seeded():
    x = torch.randn(4, 2, 12, 12, 12)
    y = torch.randint(-1, 3, (4, 12, 12, 12))
    a = augment_batch(x.clone(), y.clone(), gen=torch.Generator().manual_seed(3), p_rotate=1.0,
                      scale=0.3, p_scale=1.0)
    b = augment_batch(x.clone(), y.clone(), gen=torch.Generator().manual_seed(3), p_rotate=1.0,
                      scale=0.3, p_scale=1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert set(torch.unique(a[1]).tolist()) <= {-1, 0, 1, 2}
    assert torch.isfinite(a[0]).all()


def test_zoom_of_soft_targets_keeps_them_fractions():
    x, y = _square_batch(b=4)
    soft = torch.stack([1 - y.float(), y.float()], 1)
    _, sa = augment_batch(x.clone(), soft.clone(), gen=torch.Generator().manual_seed(2),
                          p_rotate=0.0, scale=0.4, p_scale=1.0)
    assert float(sa.min()) >= 0 and float(sa.max()) <= 1 + 1e-6
    assert not torch.equal(sa, soft)


def test_scale_jitter_is_checked():
    with pytest.raises(ValueError, match="scale_jitter must be in"):
        TrainConfig(scale_jitter=1.0)
    assert TrainConfig().scale_jitter == 0.0  # off unless asked
    assert math.isclose(TrainConfig(scale_jitter=0.2).scale_jitter, 0.2)
