"""Produce Inductor debug folders: compile model suites (timm, Hugging Face transformers, scraped nn.Modules,
TorchBench) with TORCH_COMPILE_DEBUG=1, one worker subprocess per model, and record the results in a manifest.

    lists.py       model lists (models/*.txt) and --shard i/N
    programs.py    the standalone PyTorch program written for each model
    worker.py      the per-model subprocess (the only place torch, timm, transformers or scraped code run)
    accuracy.py    the worker's check of the compiled model against eager (float64 reference, same()-style)
    recording.py   the worker's record of what each graph's call(args) takes and returns (for pairs)
    problems.py    the KernelBench problem of a program (Model, get_inputs, get_init_inputs)
    phases.py      a worker failure tied to its phase (import, init, inputs, build, compile, ...)
    infer/         --suite modules, worker side: construct a scraped nn.Module, infer its inputs
    orchestrate.py the worker pool over the visible GPUs, timeouts, manifest, resume
    modules.py     --suite modules: nn.Module classes found in scraped repositories
    torchbench.py  --suite torchbench: a TorchBench checkout's models, batch sizes, skip reasons, trimming
    command.py     what run_inductor_suite.py calls
"""
