"""Stage 3: merge kernel manifests into a torchtune text-completion dataset.

The steps, one module each, run in this order by `scraper.dataset.pipeline.build` (the completion task; pairs
and problems, scraper.dataset.tasks, share the runner, tokens, filters, dedup and split):

    load.py      kernels.jsonl of each input folder, or a scan of its .py files (scraper.generator.detect)
    tokens.py    token counts: a tokenizer.json the user names, or a clearly named estimate
    filters.py   --license / --max-tokens / --min-lines (and the place where --require plugs in)
    decontam.py  drop kernels that match an evaluation set the user has locally
    dedup.py     exact (KernelRecord.id) then near (MinHash LSH) deduplication, best provenance kept
    split.py     deterministic train/validation split by group (repository or model)
    write.py     rows as a JSON array / JSONL / Parquet, written atomically
    card.py      datasets/README.md (Hugging Face dataset card) and a token-length histogram
"""
