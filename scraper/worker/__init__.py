"""Stage 0, the worker side: one model built, compiled with TORCH_COMPILE_DEBUG=1 and checked, in a process of its
own (behind the wall for scraped modules). The wall ships this folder whole; it imports nothing of the host side
(scraper.suite, scraper.modules), only shared modules (records, accuracy, kernelbench, suiterun, suites, phases).

    job.py         WorkerJob in, WorkerResult out: the one contract with the host (scraper.suite.orchestrate)
    run.py         the one-model worker: `python -m scraper.worker JOB.json`
    serve.py       a persistent worker: one WorkerJob per line, many models per process
    programs.py    the standalone PyTorch program of each model, rendered from templates/
    templates/     the program templates, real Python files (timm, huggingface, torchbench, modules' footer)
    recording.py   what each graph's call(args) takes and returns (the pairing record)
    infer/         --suite modules: construct a scraped nn.Module, infer its inputs
"""
