"""PyTorch -> Triton pairs (KernelBook's unit) and KernelBench-form reference problems, from Inductor's debug output.

    record.py         PairRecord, pairs.jsonl, the problem index; file names
    launch.py         each kernel's launch configuration and grid
    triton_code.py    output_code.py -> the kernels + call(args) as plain Triton launches
    modelnew.py       class ModelNew: model level (recorded mapping) or graph level
    graph_problem.py  a graph's ATen forward (fx_graph_readable.py) as a KernelBench problem
    build.py          PairStep: the step of get_kernels_from_debug_info.py's chain that writes pairs and problems
    check.py          the GPU check: python -m scraper.pairs.check inductor_kernels/pairs.jsonl
"""
