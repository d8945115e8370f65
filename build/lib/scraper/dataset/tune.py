"""A torchtune tokenizer over a local `tokenizer.json`, for training on the dataset without downloading anything.

torchtune's dataset builders (`text_completion_dataset`, `instruct_dataset`, `chat_dataset`) take a model tokenizer
with `max_seq_len`, `encode` and `tokenize_messages`; a plain Hugging Face `tokenizers` file has none of that.
`TorchtuneTokenizer("tokenizer.json", max_seq_len=4096)` adds it:

    from torchtune.datasets import text_completion_dataset
    from scraper.dataset.tune import TorchtuneTokenizer
    ds = text_completion_dataset(TorchtuneTokenizer("tokenizer.json", max_seq_len=4096), source="json",
                                 data_files="datasets/triton_functions.train.json", column="text", split="train")

The model's own torchtune tokenizer (e.g. `torchtune.models.llama3.llama3_tokenizer`) is what a real fine-tune
uses; this one is for tokenizers torchtune has no builder for, and for trying the data out.
"""

from __future__ import annotations

from typing import Any, Optional

BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>", "[CLS]", "<|endoftext|>")
EOS_NAMES = ("<|end_of_text|>", "<|eot_id|>", "</s>", "<eos>", "[SEP]", "<|endoftext|>")


class TorchtuneTokenizer:
    """torchtune's ModelTokenizer protocol over a Hugging Face `tokenizers` file (see the module docstring)."""

    def __init__(self, path: str, max_seq_len: Optional[int] = 4096) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.max_seq_len = max_seq_len
        vocabulary = self.tokenizer.get_vocab()
        self.special_tokens = {token: vocabulary[token] for token in BOS_NAMES + EOS_NAMES if token in vocabulary}
        self.bos_id = next((vocabulary[t] for t in BOS_NAMES if t in vocabulary), None)
        self.eos_id = next((vocabulary[t] for t in EOS_NAMES if t in vocabulary), None)

    def encode(self, text: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """Token ids of `text`, with the begin/end tokens the file defines (none when it defines none)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        head = [self.bos_id] if add_bos and self.bos_id is not None else []
        tail = [self.eos_id] if add_eos and self.eos_id is not None else []
        return head + ids + tail

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """The text of `ids`."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def tokenize_messages(self, messages: list, add_end_tokens: bool = True, **_: Any) -> tuple[list, list]:
        """Tokens and loss mask of a conversation: each message's text in turn (masked messages, e.g. the prompt
        of an instruct row, are masked), truncated to `max_seq_len`."""
        tokens, mask = ([self.bos_id], [True]) if self.bos_id is not None else ([], [])
        for message in messages:
            ids = self.encode(message.text_content, add_bos=False, add_eos=False)
            tokens += ids
            mask += [message.masked] * len(ids)
        if add_end_tokens and self.eos_id is not None:
            tokens.append(self.eos_id)
            mask.append(True)
        if self.max_seq_len:
            tokens, mask = tokens[: self.max_seq_len], mask[: self.max_seq_len]
        return tokens, mask

    def __call__(self, sample: dict, inference: bool = False) -> dict:
        """torchtune's model transform: `messages` -> `tokens` and `mask`."""
        tokens, mask = self.tokenize_messages(sample.pop("messages"), add_end_tokens=not inference)
        sample.update(tokens=tokens, mask=mask)
        return sample
