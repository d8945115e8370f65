# Copyright 2024 Lumen AI
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
"""RMSNorm forward for wide rows: the row is streamed in blocks twice (sum of squares, then scale)."""

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_fwd_kernel(x_ptr, w_ptr, y_ptr, row_stride, n_cols, eps, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * row_stride
    y_row = y_ptr + row * row_stride
    sum_sq = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for off in range(0, n_cols, BLOCK_SIZE):
        idx = off + tl.arange(0, BLOCK_SIZE)
        v = tl.load(x_row + idx, mask=idx < n_cols, other=0.0).to(tl.float32)
        sum_sq += v * v
    inv_rms = tl.rsqrt(tl.sum(sum_sq, axis=0) / n_cols + eps)
    for off in range(0, n_cols, BLOCK_SIZE):
        idx = off + tl.arange(0, BLOCK_SIZE)
        in_bounds = idx < n_cols
        v = tl.load(x_row + idx, mask=in_bounds, other=0.0).to(tl.float32)
        gain = tl.load(w_ptr + idx, mask=in_bounds, other=1.0).to(tl.float32)
        tl.store(y_row + idx, v * inv_rms * gain, mask=in_bounds)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, block_size: int = 1024) -> torch.Tensor:
    """RMSNorm over the last dimension: x / sqrt(mean(x**2) + eps) * weight."""
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.empty_like(rows)
    block_size = min(block_size, triton.next_power_of_2(rows.shape[1]))
    _rms_norm_fwd_kernel[(rows.shape[0],)](rows, weight, out, rows.stride(0), rows.shape[1], eps, BLOCK_SIZE=block_size)
    return out.reshape(x.shape)
