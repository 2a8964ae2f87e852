"""Networks: shapes for any input size, config semantics, gradients, fused norm maths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from napari_medseg.core.config import ModelConfig
from napari_medseg.core.models import build_model, count_parameters
from napari_medseg.core.models.blocks import Up, interpolate
from napari_medseg.core.models import norm as norm_module
from napari_medseg.core.models.norm import NormAct, channels_last_format

ODD = {2: (37, 41), 3: (19, 23, 17)}


def small(**kw: object) -> ModelConfig:
    """A tiny config so the whole file runs in seconds on two cores."""
    base = dict(spatial_dims=2, in_channels=2, out_channels=3, base_width=4, depth=3)
    base.update(kw)
    return ModelConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("arch", ["unet", "encdec", "fcn"])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("upsample", ["interp", "transpose"])
def test_output_shape_odd_sizes(arch: str, dims: int, upsample: str) -> None:
    model = build_model(small(arch=arch, spatial_dims=dims, upsample=upsample))
    x = torch.randn(2, 2, *ODD[dims])
    y = model(x)
    assert y.shape == (2, 3, *ODD[dims])
    assert y.is_contiguous()  # losses may .view() the logits
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("arch", ["unet", "encdec", "fcn"])
def test_divisible_size_and_depth_one(arch: str) -> None:
    assert build_model(small(arch=arch, depth=3))(torch.randn(1, 2, 16, 8)).shape == (1, 3, 16, 8)
    assert build_model(small(arch=arch, depth=1))(torch.randn(1, 2, 5, 7)).shape == (1, 3, 5, 7)


def test_wrong_input_channels_says_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"Expected input \(batch, 2, S, S\), got \(1, 3, 8, 8\)"):
        build_model(small())(torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("norm", ["instance", "batch", "group", "none"])
def test_each_norm_trains_and_evaluates(norm: str) -> None:
    model = build_model(small(norm=norm, base_width=8))
    x = torch.randn(2, 2, 13, 11)
    model(x).sum().backward()
    model.eval()
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, 3, 13, 11) and torch.isfinite(y).all()


def test_batch_norm_updates_running_stats_only_in_training() -> None:
    model = build_model(small(norm="batch"))
    norm = next(m for m in model.modules() if isinstance(m, NormAct))
    before = norm.running_mean.clone()
    model(torch.randn(2, 2, 8, 8) + 3).sum().backward()
    after = norm.running_mean.clone()
    assert not torch.equal(before, after)
    model.eval()
    model(torch.randn(2, 2, 8, 8))
    assert torch.equal(after, norm.running_mean)


def test_dropout_random_in_train_deterministic_in_eval() -> None:
    model = build_model(small(dropout=0.5))
    x = torch.randn(1, 2, 16, 16)
    assert not torch.allclose(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_no_dropout_is_deterministic_in_train() -> None:
    model = build_model(small(dropout=0.0))
    x = torch.randn(1, 2, 16, 16)
    assert torch.allclose(model(x), model(x))


@pytest.mark.parametrize("arch", ["unet", "encdec", "fcn"])
@pytest.mark.parametrize(("cin", "cout"), [(1, 1), (2, 2), (3, 1)])
def test_residual_adds_the_input(arch: str, cin: int, cout: int) -> None:
    cfg = small(arch=arch, in_channels=cin, out_channels=cout)
    x = torch.randn(2, cin, 9, 10)
    plain = build_model(cfg)
    resid = build_model(ModelConfig.from_dict({**cfg.to_dict(), "residual": True}))
    resid.load_state_dict(plain.state_dict())
    expected = x if cout == cin else x[:, :1]
    torch.testing.assert_close(resid(x), plain(x) + expected)


def test_residual_with_mismatched_channels_is_refused() -> None:
    with pytest.raises(ValueError, match=r"out_channels must equal in_channels \(2\) or be 1"):
        build_model(small(in_channels=2, out_channels=3, residual=True))


@pytest.mark.parametrize("arch", ["unet", "encdec", "fcn"])
def test_parameter_count_grows_with_base_width(arch: str) -> None:
    counts = [count_parameters(build_model(small(arch=arch, base_width=w))) for w in (4, 8, 16)]
    assert counts[0] < counts[1] < counts[2]


def test_unet_parameter_count_by_hand() -> None:
    # depth 2, widths (4, 8), 2D, no norm -> conv biases everywhere.
    cfg = small(depth=2, norm="none", upsample="transpose", in_channels=1, out_channels=2)
    expected = (
        (1 * 4 * 9 + 4) + (4 * 4 * 9 + 4)  # level 0
        + (4 * 8 * 9 + 8) + (8 * 8 * 9 + 8)  # level 1 (first conv strided)
        + (8 * 4 * 4 + 4)  # 2x2 transposed conv 8 -> 4
        + (8 * 4 * 9 + 4) + (4 * 4 * 9 + 4)  # decoder on the concatenation
        + (4 * 2 + 2)  # head
    )
    assert count_parameters(build_model(cfg)) == expected


@pytest.mark.parametrize("arch", ["unet", "encdec", "fcn"])
@pytest.mark.parametrize("dims", [2, 3])
def test_gradients_reach_the_first_layer(arch: str, dims: int) -> None:
    model = build_model(small(arch=arch, spatial_dims=dims))
    target = torch.randint(0, 3, (2, *ODD[dims]))
    F.cross_entropy(model(torch.randn(2, 2, *ODD[dims])), target).backward()
    first = next(model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_widths_are_capped() -> None:
    model = build_model(ModelConfig(spatial_dims=3, base_width=32, depth=6, in_channels=1))
    widest = max(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv3d))
    assert widest == 320


def test_inference_mode_matches_training_graph() -> None:
    model = build_model(small(spatial_dims=3, base_width=8)).eval()
    x = torch.randn(1, 2, 12, 9, 10)
    with_grad = model(x)
    with torch.inference_mode():
        without = model(x)
    torch.testing.assert_close(without, with_grad)


@pytest.mark.parametrize("dims", [2, 3])
def test_projection_commutes_with_interpolation(dims: int) -> None:
    # Up(mode="interp") projects at the coarse resolution; the result must equal
    # interpolating first, then projecting (the textbook order).
    up = Up(dims, 6, 3, "interp")
    x = torch.randn(2, 6, *(5,) * dims)
    torch.testing.assert_close(up(x), up.proj(interpolate(x, 2)), atol=1e-5, rtol=1e-5)


# --- the fused normalisation against PyTorch's own kernels -------------------


@pytest.mark.parametrize("kind", ["instance", "group", "batch"])
@pytest.mark.parametrize("shape", [(2, 16, 5, 6, 7), (3, 24, 9, 11)])
def test_fused_norm_matches_native(kind: str, shape: tuple[int, ...]) -> None:
    fused = NormAct(kind, shape[1])
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.uniform_(-0.5, 0.5)
    native = NormAct(kind, shape[1])
    native.load_state_dict(fused.state_dict())
    x = torch.randn(shape) * 2 + 0.7
    grad = torch.randn(shape)

    xa = x.contiguous(memory_format=channels_last_format(x.dim())).requires_grad_(True)
    xb = x.clone().requires_grad_(True)  # contiguous -> PyTorch's kernels
    ya, yb = fused(xa), native(xb)
    ya.backward(grad)
    yb.backward(grad)

    assert ya.is_contiguous(memory_format=channels_last_format(x.dim()))
    torch.testing.assert_close(ya, yb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.weight.grad, native.weight.grad, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(fused.bias.grad, native.bias.grad, atol=1e-3, rtol=1e-4)
    if kind == "batch":
        torch.testing.assert_close(fused.running_mean, native.running_mean)
        torch.testing.assert_close(fused.running_var, native.running_var)


def test_large_input_statistics_match(monkeypatch: pytest.MonkeyPatch) -> None:
    # Large inputs take the bmm path; lower the threshold so a small tensor does too.
    r, s = torch.randn(2, 1000, 8), torch.randn(2, 1000, 8)
    expected = (r * s).sum(1, keepdim=True)
    monkeypatch.setattr(norm_module, "_SMALL", 64)
    torch.testing.assert_close(norm_module._sum_prod(r, s), expected, atol=1e-4, rtol=1e-5)


def test_group_norm_uses_at_most_eight_groups() -> None:
    assert NormAct("group", 16).groups == 8
    assert NormAct("group", 12).groups == 4
    assert NormAct("instance", 12).groups == 12


def test_fused_norm_inplace_without_grad() -> None:
    norm = NormAct("instance", 8, inplace=True)
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    expected = F.leaky_relu(F.instance_norm(x), 0.01)
    with torch.no_grad():
        y = norm(x)
    assert y.data_ptr() == x.data_ptr()
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
