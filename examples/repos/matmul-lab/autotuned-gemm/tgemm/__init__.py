"""Autotuned Triton matmul with a fused activation epilogue."""

from .matmul import matmul

__all__ = ["matmul"]
