"""Softmax for rows too long for one block: the row is streamed three times (max, sum, write)."""

import torch
import triton
import triton.language as tl

from ._helpers import exp_shifted


@triton.jit
def softmax_looped_kernel(out_ptr, in_ptr, row_stride, n_cols, BLOCK_SIZE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    row_in = in_ptr + row * row_stride
    row_out = out_ptr + row * row_stride
    offsets = tl.arange(0, BLOCK_SIZE)

    running_max = tl.full([BLOCK_SIZE], -float("inf"), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_SIZE):
        cols = start + offsets
        x = tl.load(row_in + cols, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
        running_max = tl.maximum(running_max, x)
    row_max = tl.max(running_max, axis=0)

    partial_sums = tl.zeros([BLOCK_SIZE], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_SIZE):
        cols = start + offsets
        x = tl.load(row_in + cols, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
        partial_sums += exp_shifted(x, row_max)
    inv_denominator = 1.0 / tl.sum(partial_sums, axis=0)

    for start in range(0, n_cols, BLOCK_SIZE):
        cols = start + offsets
        mask = cols < n_cols
        x = tl.load(row_in + cols, mask=mask, other=-float("inf")).to(tl.float32)
        tl.store(row_out + cols, exp_shifted(x, row_max) * inv_denominator, mask=mask)


def long_softmax(x: torch.Tensor, block_size: int = 1024) -> torch.Tensor:
    """Softmax over the last dimension of a 2-D tensor whose rows may be arbitrarily long."""
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D tensor, got shape {tuple(x.shape)}")
    x = x.contiguous()
    out = torch.empty_like(x)
    block_size = min(block_size, triton.next_power_of_2(x.shape[1]))
    softmax_looped_kernel[(x.shape[0],)](out, x, x.stride(0), x.shape[1], BLOCK_SIZE=block_size)
    return out
