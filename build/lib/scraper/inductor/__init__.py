"""Stage 1: Triton kernels out of PyTorch Inductor's TORCH_COMPILE_DEBUG=1 folders (`output_code.py`).

    extract_kernels(inputs, out_dir, stats, steps) -> Stats   the whole stage (get_kernels_from_debug_info.py)
    read_output_code(text) -> OutputCode              the kernels embedded in one output_code.py
    clean_kernel(module_text, name) -> CleanKernel    clean code, kind and launch metadata of one kernel
    parse_comment(comment) -> dict                    provenance from the comment block above a kernel
"""

from scraper.inductor.kernel import CleanKernel, KernelModuleError, classify, clean_kernel
from scraper.inductor.output_code import EmbeddedKernel, OutputCode, parse_comment, read_output_code
from scraper.inductor.stage import extract_kernels

__all__ = [
    "CleanKernel",
    "EmbeddedKernel",
    "KernelModuleError",
    "OutputCode",
    "classify",
    "clean_kernel",
    "extract_kernels",
    "parse_comment",
    "read_output_code",
]
