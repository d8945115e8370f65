"""--suite timm: timm models with random weights, `timm.create_model(name, pretrained=False)`, a batch of random
images of the model's own input size (scraper/worker/templates/timm.py)."""

from scraper.suites.base import Suite

SUITE = Suite("timm", default_batch=8, library="huggingface/pytorch-image-models", license="Apache-2.0",
              packages=("timm",))
