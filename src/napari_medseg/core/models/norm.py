"""Normalisation fused with LeakyReLU, fast on CPU for channels-last tensors.

Why this exists: on CPU, PyTorch's instance/group/batch norm kernels are
2-3x slower on channels-last tensors than on contiguous ones, while the
convolutions are 1.3-1.7x faster channels-last. Here the statistics are
plain sums over the rows of the ``(N, S, C)`` view (fast: C is the
contiguous axis), and normalisation, activation and the whole backward are
a handful of element-wise passes with one allocation each way.

The maths is the textbook one: with ``xhat = (x - mean) * rstd`` over the
reduction set ``R`` (spatial for instance, spatial x channels-in-group for
group, batch x spatial for batch norm), ``y = act(xhat * w + b)`` and

``dx = rstd * (gh - mean_R(gh) - xhat * mean_R(gh * xhat))``, ``gh = dL/dxhat``.

The variance is ``E[x^2] - E[x]^2`` as in PyTorch's own channels-last group
norm kernel; inputs are convolution outputs whose mean is small next to their
spread, so the cancellation stays at float32 rounding level.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: LeakyReLU slope used by every block (nnU-Net's choice).
NEG_SLOPE = 0.01

#: Largest number of groups for ``norm="group"``.
MAX_GROUPS = 8


def channels_last_format(ndim: int) -> torch.memory_format:
    """Return the channels-last memory format for a tensor of ``ndim`` dims."""
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


def _rows(x: torch.Tensor) -> torch.Tensor:
    """View a channels-last ``(N, C, *S)`` tensor as ``(N, prod(S), C)`` without copying."""
    n, c = x.shape[:2]
    return x.permute(0, *range(2, x.dim()), 1).reshape(n, -1, c)


def _unrows(r: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`_rows`: back to an ``(N, C, *S)`` channels-last view."""
    nd = len(shape)
    return r.view(shape[0], *shape[2:], shape[1]).permute(0, nd - 1, *range(1, nd - 1))


#: Above this many elements :func:`_sum_prod` avoids an input-sized temporary (8 MiB).
_SMALL = 1 << 21


def _sum_prod(r: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per-(sample, channel) ``sum(r * s)`` over rows, shape ``(N, 1, C)``.

    For small inputs the element-wise product and a sum is fastest. For
    large ones its input-sized temporary costs more in page faults than the
    arithmetic (a first touch costs ~1 ms per MiB here), so they take the
    diagonal of ``r^T s`` from ``bmm``: no temporary, one pass. (Summing the
    product in cache-sized chunks was faster single-threaded but slower with
    two threads on busy cores: many small parallel regions.)
    """
    if r.numel() <= _SMALL:
        return (r * s).sum(1, keepdim=True)
    return torch.bmm(r.transpose(1, 2), s).diagonal(dim1=1, dim2=2).unsqueeze(1)


class _Pool:
    """Pools per-(sample, channel) sums over the normalisation set and broadcasts back."""

    def __init__(self, groups: int, across_batch: bool, n: int, c: int, rows: int) -> None:
        self.groups = groups
        self.across_batch = across_batch
        self.count = rows * (c // groups) * (n if across_batch else 1)

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if self.across_batch:
            t = t.sum(0, keepdim=True)
        n, _, c = t.shape
        if self.groups < c:
            k = c // self.groups
            t = t.view(n, 1, self.groups, k).sum(-1, keepdim=True).expand(n, 1, self.groups, k)
            t = t.reshape(n, 1, c)
        return t / self.count


def _stats(
    r: torch.Tensor, pool: _Pool, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, biased variance and ``1/sqrt(var + eps)`` over the pooled set."""
    mean = pool(r.sum(1, keepdim=True))
    var = (pool(_sum_prod(r, r)) - mean * mean).clamp_(min=0.0)
    return mean, var, (var + eps).rsqrt()


class _FusedNormAct(torch.autograd.Function):
    """``leaky_relu(norm(x) * w + b)`` on a channels-last CPU tensor."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        groups: int,
        across_batch: bool,
        eps: float,
        on_stats: Callable[[torch.Tensor, torch.Tensor, int], None] | None,
    ) -> torch.Tensor:
        r = _rows(x)
        pool = _Pool(groups, across_batch, r.shape[0], r.shape[2], r.shape[1])
        mean, var, rstd = _stats(r, pool, eps)
        if on_stats is not None:
            on_stats(mean, var, pool.count)
        scale = rstd * weight
        y = torch.addcmul(bias - mean * scale, r, scale)
        F.leaky_relu_(y, NEG_SLOPE)
        # The next convolution keeps y for its own backward, so saving it is free.
        ctx.save_for_backward(r, y, mean, rstd, weight)
        ctx.pool = pool  # type: ignore[attr-defined]
        ctx.shape = x.shape  # type: ignore[attr-defined]
        return _unrows(y, x.shape)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        r, y, mean, rstd, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        pool: _Pool = ctx.pool  # type: ignore[attr-defined]
        grad = grad.contiguous(memory_format=channels_last_format(grad.dim()))
        # One allocation: gp is turned into the input gradient in place below.
        gp = torch.ops.aten.leaky_relu_backward(_rows(grad), y, NEG_SLOPE, True)
        s_g = gp.sum(1, keepdim=True)  # sum gp        per (n, c)
        s_gx = _sum_prod(gp, r)  # sum gp * x    per (n, c)
        s_gxhat = (s_gx - mean * s_g) * rstd  # sum gp * xhat per (n, c)
        m1 = pool(s_g * weight)  # mean_R(gh)
        m2 = pool(s_gxhat * weight)  # mean_R(gh * xhat)
        a = rstd * weight
        b = -rstd * rstd * m2
        c = -rstd * m1 - mean * b
        torch.addcmul(c, gp, a, out=gp).addcmul_(r, b)  # two in-place passes
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_x = _unrows(gp, ctx.shape) if needs[0] else None  # type: ignore[attr-defined]
        grad_w = s_gxhat.sum((0, 1)) if needs[1] else None
        grad_b = s_g.sum((0, 1)) if needs[2] else None
        return grad_x, grad_w, grad_b, None, None, None, None


class NormAct(nn.Module):
    """Normalisation then LeakyReLU, one module so the two can be fused.

    Parameters
    ----------
    kind : {"instance", "batch", "group", "none"}
        ``instance`` normalises each sample and channel over space (with a
        learnt per-channel affine); ``group`` over groups of channels (at
        most :data:`MAX_GROUPS`); ``batch`` over the batch and space with
        running statistics for evaluation; ``none`` only activates.
    channels : int
        Number of channels.
    eps : float
        Added to the variance.
    momentum : float
        Running-statistics momentum for ``batch``.
    inplace : bool
        Overwrite the input when no gradient is needed (inference), saving
        an allocation and a pass per layer. Only for inputs the caller owns,
        such as a convolution's output.

    Notes
    -----
    On CPU with a channels-last float32 input the normalisation and
    activation run fused (:class:`_FusedNormAct`); elsewhere (GPU, other
    dtypes, contiguous input, batch norm in eval mode) PyTorch's own
    kernels run. Both compute the same
    function; the tests check one against the other.
    """

    def __init__(
        self, kind: str, channels: int, *, eps: float = 1e-5, momentum: float = 0.1,
        inplace: bool = False,
    ) -> None:
        super().__init__()
        if kind not in ("instance", "batch", "group", "none"):
            raise ValueError(f"norm={kind!r} is not one of instance, batch, group, none.")
        self.kind = kind
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        self.inplace = inplace
        self.groups = math.gcd(channels, MAX_GROUPS) if kind == "group" else channels
        if kind != "none":
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        if kind == "batch":
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.channels}, groups={self.groups}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            # In place is safe on a convolution's output: its backward does not need it.
            return F.leaky_relu(x, NEG_SLOPE, inplace=self.inplace)
        cl = x.is_contiguous(memory_format=channels_last_format(x.dim()))
        # float32 only: in bf16/fp16 the E[x^2] - E[x]^2 variance would lose all precision.
        fast = x.device.type == "cpu" and cl and x.dtype == torch.float32
        batch_stats = self.kind != "batch" or self.training
        if not (fast and batch_stats):
            return F.leaky_relu(self._native(x), NEG_SLOPE, inplace=True)
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        across_batch = self.kind == "batch"
        if needs_grad:
            on_stats = self._running_from if across_batch else None
            return _FusedNormAct.apply(
                x, self.weight, self.bias, self.groups, across_batch, self.eps, on_stats
            )
        return self._no_grad(x, across_batch)

    @torch.no_grad()
    def _no_grad(self, x: torch.Tensor, across_batch: bool) -> torch.Tensor:
        r = _rows(x)
        pool = _Pool(self.groups, across_batch, r.shape[0], r.shape[2], r.shape[1])
        mean, var, rstd = _stats(r, pool, self.eps)
        if across_batch:
            self._running_from(mean, var, pool.count)
        scale = rstd * self.weight
        shift = self.bias - mean * scale
        # One read-write pass (addcmul into r) instead of two (mul_, add_).
        out = torch.addcmul(shift, r, scale, out=r if self.inplace else None)
        return _unrows(F.leaky_relu_(out, NEG_SLOPE), x.shape)

    @torch.no_grad()
    def _running_from(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        m = self.momentum
        unbiased = var.view(-1) * (count / max(count - 1, 1))
        self.running_mean.mul_(1 - m).add_(mean.view(-1), alpha=m)
        self.running_var.mul_(1 - m).add_(unbiased, alpha=m)

    def _native(self, x: torch.Tensor) -> torch.Tensor:
        """PyTorch's own kernels: used on GPU, for contiguous inputs, and for eval batch norm."""
        if self.kind == "batch":
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias,
                self.training, self.momentum, self.eps,
            )
        # group_norm with one group per channel *is* instance norm, and is faster.
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)
