"""LayerNorm and RMSNorm with Triton kernels."""

from fastnorm.layer_norm import layer_norm
from fastnorm.rms_norm import rms_norm

__all__ = ["layer_norm", "rms_norm"]
