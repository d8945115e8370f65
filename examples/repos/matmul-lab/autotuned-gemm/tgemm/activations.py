"""Activation functions applied to the fp32 accumulator tile before it is stored."""

import triton
import triton.language as tl


@triton.jit
def leaky_relu(x):
    return tl.where(x >= 0, x, 0.01 * x)


@triton.jit
def fast_gelu(x):
    # the sigmoid approximation of GELU (Hendrycks & Gimpel, 2016): x * sigmoid(1.702 * x)
    return x * tl.sigmoid(1.702 * x)
