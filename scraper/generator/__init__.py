"""Stage 2b: cut every Triton jit kernel out of downloaded repositories with its static dependency closure."""
