"""Token counts for the `n_tokens` column and `--max-tokens`: offline only, never a network download.

With `--tokenizer path/to/tokenizer.json` the counts come from that Hugging Face `tokenizers` file (the exact
tokenizer of the model being fine-tuned). Without one, they are an estimate, named as such everywhere it is
reported (`estimate:chars/4`): one token per four characters, the usual rule of thumb for BPE tokenizers on
English and code.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

ESTIMATE_NAME = "estimate:chars/4"
CHARS_PER_TOKEN = 4
BATCH = 256


class TokenizerError(ValueError):
    """The --tokenizer file exists but is not a tokenizer.json that `tokenizers` can read."""


class TokenCounter:
    """Counts tokens of texts with a tokenizer.json, or estimates them when none is given."""

    def __init__(self, tokenizer_path: Optional[str | Path] = None) -> None:
        self.tokenizer = None
        self.name = ESTIMATE_NAME
        if tokenizer_path:
            from tokenizers import Tokenizer  # only loaded when asked for

            path = Path(tokenizer_path)
            if not path.is_file():
                raise FileNotFoundError(f"tokenizer file not found: {path} (expected a tokenizer.json)")
            try:
                self.tokenizer = Tokenizer.from_file(str(path))
            except Exception as exc:  # tokenizers raises a bare Exception for a file it cannot read
                raise TokenizerError(f"cannot read tokenizer {path}: {exc}") from exc
            self.name = f"tokenizer:{path.name}"

    def count(self, texts: list) -> list:
        """Token count of each text, in order."""
        if self.tokenizer is None:
            return [estimate_tokens(text) for text in texts]
        counts = []
        for start in range(0, len(texts), BATCH):
            encodings = self.tokenizer.encode_batch(texts[start:start + BATCH], add_special_tokens=False)
            counts.extend(len(encoding.ids) for encoding in encodings)
        return counts


def estimate_tokens(text: str) -> int:
    """The `estimate:chars/4` token count of `text`."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)
