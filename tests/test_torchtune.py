"""The dataset as torchtune trains on it: the real `text_completion_dataset` over create_json.py's output, with an
offline tokenizer (a tokenizer.json trained here), as the README tells users to do."""

from __future__ import annotations

import json
import re

import pytest

import create_json
from dataset_helpers import build_stage_outputs
from scraper.dataset.tune import TorchtuneTokenizer

torchtune_datasets = pytest.importorskip("torchtune.datasets", reason="torchtune is a test requirement")


@pytest.fixture(scope="module")
def dataset(tcd_roots, tmp_path_factory):
    work = tmp_path_factory.mktemp("tune")
    inductor, generated = build_stage_outputs(tcd_roots, work / "stages")
    out = work / "ds" / "triton_functions.json"
    assert create_json.main([str(inductor), str(generated), "-o", str(out), "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def tokenizer_file(dataset, tmp_path_factory):
    """A small word-level tokenizer.json trained on the dataset text, with begin and end tokens (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    texts = [row["text"] for row in json.loads(dataset.read_text())]
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<s>", "</s>"]))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_text_completion_dataset_reads_the_train_split(dataset, tokenizer_file):
    train = dataset.with_name("triton_functions.train.json")
    tokenizer = TorchtuneTokenizer(str(tokenizer_file), max_seq_len=64)
    ds = torchtune_datasets.text_completion_dataset(tokenizer, source="json", data_files=str(train),
                                                    column="text", split="train")
    rows = json.loads(train.read_text())
    assert len(ds) == len(rows) > 0
    sample = ds[0]
    # torchtune cuts a long text to max_seq_len - 1 tokens: <s> and the text's first 62 tokens
    assert len(sample["tokens"]) == len(sample["labels"]) == 63 and sample["tokens"][0] == tokenizer.bos_id
    words = tokenizer.decode(sample["tokens"]).split()
    expected = re.findall(r"\w+|[^\w\s]+", rows[0]["text"])  # what a whitespace pre-tokenizer splits into
    assert words == expected[:62]


def test_instruct_dataset_masks_the_prompt(dataset, tokenizer_file, tmp_path):
    rows = [{"question": "write a triton kernel that adds one", "answer": "tl.store(out, x + 1)"}]
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps(rows))
    tokenizer = TorchtuneTokenizer(str(tokenizer_file), max_seq_len=256)
    ds = torchtune_datasets.instruct_dataset(tokenizer, source="json", data_files=str(data), split="train",
                                             column_map={"input": "question", "output": "answer"})
    sample = ds[0]
    prompt = len(tokenizer.encode(rows[0]["question"], add_bos=False, add_eos=False))
    labels = sample["labels"]
    assert all(label == -100 for label in labels[1 : 1 + prompt])  # the question is not trained on
    assert any(label != -100 for label in labels[1 + prompt:])
