"""SwiGLU activation, silu(gate) * up, fused into one elementwise pass."""

import torch
import triton
import triton.language as tl
from triton import jit


@triton.heuristics({"EVEN_N": lambda args: args["n_elements"] % args["BLOCK_SIZE"] == 0})
@jit
def _swiglu_fwd_kernel(gate_ptr, up_ptr, out_ptr, n_elements, BLOCK_SIZE: tl.constexpr, EVEN_N: tl.constexpr):
    pid = tl.program_id(0)
    offsets = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    # when the size divides evenly the bounds check (and its predicate registers) can be skipped
    if EVEN_N:
        gate = tl.load(gate_ptr + offsets).to(tl.float32)
        up = tl.load(up_ptr + offsets)
    else:
        in_bounds = offsets < n_elements
        gate = tl.load(gate_ptr + offsets, mask=in_bounds, other=0.0).to(tl.float32)
        up = tl.load(up_ptr + offsets, mask=in_bounds, other=0.0)
    out = (gate * tl.sigmoid(gate)).to(up.dtype) * up
    if EVEN_N:
        tl.store(out_ptr + offsets, out)
    else:
        tl.store(out_ptr + offsets, out, mask=offsets < n_elements)


def swiglu(gate: torch.Tensor, up: torch.Tensor, block_size: int = 1024) -> torch.Tensor:
    """silu(gate) * up, elementwise; both tensors must have the same shape."""
    if gate.shape != up.shape:
        raise ValueError(f"shape mismatch: {tuple(gate.shape)} vs {tuple(up.shape)}")
    gate, up = gate.contiguous(), up.contiguous()
    out = torch.empty_like(up)
    n = out.numel()
    _swiglu_fwd_kernel[(triton.cdiv(n, block_size),)](gate, up, out, n, BLOCK_SIZE=block_size)
    return out
