# Copyright 2024 Lumen AI
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""LayerNorm forward and backward: one program per row, the row held in one block."""

import torch
import triton
import triton.language as tl


@triton.jit
def _layer_norm_fwd_kernel(X, Y, W, B, Mean, Rstd, stride, N, eps, BLOCK_N: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / N
    centered = tl.where(mask, x - mean, 0.0)
    var = tl.sum(centered * centered, axis=0) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    # saved for the backward pass
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    y = centered * rstd * w + b
    tl.store(Y + row * stride + cols, y, mask=mask)


@triton.jit
def _layer_norm_bwd_kernel(DX, DY, DW, DB, X, W, Mean, Rstd, stride, N, BLOCK_N: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    mask = cols < N
    x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(DY + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(Mean + row)
    rstd = tl.load(Rstd + row)
    xhat = tl.where(mask, (x - mean) * rstd, 0.0)
    wdy = w * dy
    c1 = tl.sum(xhat * wdy, axis=0) / N
    c2 = tl.sum(wdy, axis=0) / N
    dx = (wdy - (xhat * c1 + c2)) * rstd
    tl.store(DX + row * stride + cols, dx, mask=mask)
    # this row's share of dW and dB; the wrapper reduces over rows
    tl.store(DW + row * N + cols, dy * xhat, mask=mask)
    tl.store(DB + row * N + cols, dy, mask=mask)


def _block_size(n_cols: int, element_size: int) -> int:
    block = triton.next_power_of_2(n_cols)
    if block > 65536 // element_size:
        raise ValueError(f"feature dimension {n_cols} is too large for a single block")
    return block


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        x_rows = x.reshape(-1, x.shape[-1]).contiguous()
        M, N = x_rows.shape
        y = torch.empty_like(x_rows)
        mean = torch.empty(M, dtype=torch.float32, device=x.device)
        rstd = torch.empty(M, dtype=torch.float32, device=x.device)
        block_n = _block_size(N, x.element_size())
        _layer_norm_fwd_kernel[(M,)](x_rows, y, weight, bias, mean, rstd, x_rows.stride(0), N, eps, BLOCK_N=block_n)
        ctx.save_for_backward(x_rows, weight, mean, rstd)
        ctx.block_n = block_n
        return y.reshape(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x_rows, weight, mean, rstd = ctx.saved_tensors
        M, N = x_rows.shape
        dy_rows = dy.reshape(M, N).contiguous()
        dx = torch.empty_like(x_rows)
        dw_rows = torch.empty((M, N), dtype=torch.float32, device=x_rows.device)
        db_rows = torch.empty((M, N), dtype=torch.float32, device=x_rows.device)
        _layer_norm_bwd_kernel[(M,)](
            dx, dy_rows, dw_rows, db_rows, x_rows, weight, mean, rstd, x_rows.stride(0), N, BLOCK_N=ctx.block_n
        )
        dw = dw_rows.sum(0).to(weight.dtype)
        db = db_rows.sum(0).to(weight.dtype)
        return dx.reshape(dy.shape), dw, db, None


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last dimension, differentiable in x, weight and bias."""
    return LayerNormFunction.apply(x, weight, bias, eps)
