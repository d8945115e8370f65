"""Rotary position embedding (RoPE), "rotate half" layout as in GPT-NeoX and Llama."""

import torch
import triton
import triton.language as tl


@triton.jit
def _rotary_kernel(
    x_ptr, cos_ptr, sin_ptr, out_ptr,
    seq_len, n_heads,
    stride_xb, stride_xs, stride_xh,
    HALF_DIM: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    # one program per (batch, position, head) vector of head_dim = 2 * HALF_DIM values
    pid = tl.program_id(0)
    head = pid % n_heads
    pos = (pid // n_heads) % seq_len
    batch = pid // (n_heads * seq_len)
    base = batch * stride_xb + pos * stride_xs + head * stride_xh
    d = tl.arange(0, BLOCK_HALF)
    mask = d < HALF_DIM
    x1 = tl.load(x_ptr + base + d, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + base + HALF_DIM + d, mask=mask, other=0.0).to(tl.float32)
    cos = tl.load(cos_ptr + pos * HALF_DIM + d, mask=mask, other=1.0).to(tl.float32)
    sin = tl.load(sin_ptr + pos * HALF_DIM + d, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + base + d, x1 * cos - x2 * sin, mask=mask)
    tl.store(out_ptr + base + HALF_DIM + d, x2 * cos + x1 * sin, mask=mask)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (batch, seq, heads, head_dim) by the angles whose cos/sin (seq, head_dim // 2) are given."""
    batch, seq_len, n_heads, head_dim = x.shape
    if head_dim % 2 or cos.shape != (seq_len, head_dim // 2) or sin.shape != cos.shape:
        raise ValueError("expected an even head_dim and cos/sin of shape (seq, head_dim // 2)")
    x = x.contiguous()
    out = torch.empty_like(x)
    half = head_dim // 2
    _rotary_kernel[(batch * seq_len * n_heads,)](
        x, cos.contiguous(), sin.contiguous(), out,
        seq_len, n_heads, x.stride(0), x.stride(1), x.stride(2),
        HALF_DIM=half, BLOCK_HALF=triton.next_power_of_2(half),
    )
    return out
