"""triton-data: build a dataset of Triton kernels from Inductor debug folders and GitHub repositories."""
