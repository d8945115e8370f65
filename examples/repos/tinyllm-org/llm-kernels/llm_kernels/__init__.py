"""Fused Triton kernels for Llama-style models."""

from llm_kernels.rotary import apply_rotary
from llm_kernels.swiglu import swiglu

__all__ = ["apply_rotary", "swiglu"]
