"""Small @triton.jit building blocks shared by the softmax kernels."""

import triton
import triton.language as tl

# exp(x) == exp2(x * log2(e)); exp2 is a single instruction on NVIDIA and AMD GPUs.
# A jit function may read a global only if its value is a tl.constexpr (an annotation `LOG2E: tl.constexpr = ...`
# is not enough: Triton's compiler rejects it, though TRITON_INTERPRET=1 does not).
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def exp_shifted(x, row_max):
    """exp(x - row_max) through exp2; masked lanes loaded as -inf give exactly 0."""
    return tl.exp2((x - row_max) * LOG2E)
