"""Softmax kernels written in Triton."""

from softmax_triton.long_softmax import long_softmax
from softmax_triton.softmax import softmax

__all__ = ["softmax", "long_softmax"]
__version__ = "0.2.1"
