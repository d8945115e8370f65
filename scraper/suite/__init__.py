"""Stage 0, the host side: compile model suites (timm, Hugging Face transformers, scraped nn.Modules, TorchBench)
with TORCH_COMPILE_DEBUG=1, one worker process per model (scraper/worker/, behind the wall for scraped modules),
and record the results in a manifest (scraper.suiterun: the typed contract with stage 1).

    command.py     what run_inductor_suite.py calls: arguments, jobs, the run, its summary and exit status
    orchestrate.py the worker pool over the visible GPUs, timeouts, the manifest, resume, persistent workers
    confined.py    --suite modules behind the wall: a job's sandbox, what it may see, what is taken out
    walled.py      --suite modules in persistent workers behind the wall (the default)
    model_lists.py model lists (scraper/suites/models/*.txt) and --shard i/N (lists.py: its old name)

The suites themselves are in scraper/suites/ (one module each), the discovery of --suite modules in
scraper/modules/.
"""
