import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")  # a test of W&B logging sets "offline" itself
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# `make test` runs the suite on two workers (pytest-xdist): one thread each fills two cores without
# oversubscribing them; alone, a run takes up to two.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "checkpoints" / "tiny-llada"


@pytest.hookimpl(trylast=True)  # after pytest-xdist's worker hook has suffixed the grouped node ids
def pytest_collection_modifyitems(config, items):
    """Mark tests whose xdist_group `--dist loadgroup` ignored (a pytest-xdist that does not support this
    pytest): each shared decode would run on both workers and the suite take twice as long, still passing."""
    if getattr(config.option, "loadgroup", False):  # set on pytest-xdist workers only
        for item in items:
            item.group_lost = bool(item.get_closest_marker("xdist_group")) and "@" not in item.nodeid


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up
def pytest_runtest_setup(item):
    if getattr(item, "group_lost", False):
        pytest.fail("--dist loadgroup ignored this test's xdist_group: this pytest-xdist does not support this "
                    "pytest; install the versions pyproject.toml pins (make install)", pytrace=False)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls: one thread is fastest, and leaves the other cores to whatever else is running."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny():
    """The shipped tiny dLLM: (model, tokenizer, spec)."""
    from learn2pd.models.loading import load_model

    if not (TINY / "config.json").is_file():
        pytest.skip("checkpoints/tiny-llada not built yet (make tiny-model)")
    return load_model(TINY)


@pytest.fixture(scope="session")
def small_llada():
    """A tiny random LLaDA over 20 token ids (mask 0, EOS 1) for the learned-policy tests."""
    from learn2pd.models import LLaDAConfig, LLaDAModelLM

    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=64, vocab_size=20, embedding_size=20,
                      mask_token_id=0, eos_token_id=1, pad_token_id=1, eot_token_id=None, init_std=1.0)
    return LLaDAModelLM(cfg).eval()


@pytest.fixture(scope="session")
def spread_llada():
    """A tiny random LLaDA (vocabulary 58, mask 0, EOS 1) with a large init_std, so confidences are spread
    out and threshold rules make step-dependent decisions; it never predicts the mask token."""
    from learn2pd.models import LLaDAConfig, LLaDAModelLM

    cfg = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=128, vocab_size=58,
                      embedding_size=58, max_sequence_length=128, rope_theta=10000.0, mask_token_id=0,
                      eos_token_id=1, pad_token_id=1, eot_token_id=None, init_std=0.5)
    torch.manual_seed(1234)
    m = LLaDAModelLM(cfg).eval()
    with torch.no_grad():
        # A trained dLLM never predicts [MASK]; zeroing its head row makes its logit 0, far below the
        # maximum of ~57 logits of std ~4, so no decode (ours or a reference) can stall on it.
        m.model.transformer.ff_out.weight[0].zero_()
    return m


@pytest.fixture(scope="session")
def random_ckpt(tmp_path_factory):
    """A tiny random LLaDA with the character tokenizer, saved like a real checkpoint folder."""
    from learn2pd.models import LLaDAConfig, LLaDAModelLM
    from learn2pd.models.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    torch.manual_seed(0)
    cfg = LLaDAConfig(d_model=32, n_heads=2, n_layers=2, mlp_hidden_size=64, vocab_size=len(tok),
                      embedding_size=len(tok), mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.eos_token_id, eot_token_id=None, max_sequence_length=96, init_std=0.3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-random"
    LLaDAModelLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path
