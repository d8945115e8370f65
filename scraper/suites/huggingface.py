"""--suite huggingface: transformers model classes built from their config class (random weights, layers capped,
nothing downloaded), inputs as PyTorch's benchmarks/dynamo/huggingface.py makes them
(scraper/worker/templates/huggingface.py)."""

from scraper.suites.base import Suite

SUITE = Suite("huggingface", default_batch=8, library="huggingface/transformers", license="Apache-2.0",
              packages=("transformers",))
