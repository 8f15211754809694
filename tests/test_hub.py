"""Filters on the Hugging Face Hub, offline: a filter in a local hub cache (laid out as huggingface_hub
stores it) decodes the same tokens as the folder it came from; the model card; what a push uploads."""

from __future__ import annotations

import shutil

import pytest
import torch
from huggingface_hub import constants

from learn2pd.decoding.engine import DecodeConfig, decode
from learn2pd.filters.hub import model_card, push_filter, resolve_filter
from learn2pd.filters.models import FilterConfig, build_filter, load_filter
from learn2pd.models.spec import ModelSpec

SPEC = ModelSpec("llada", 0, 1, 1, (1,), (5,))
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def model(spread_llada):
    return spread_llada  # mask 0, EOS 1: SPEC's ids


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A filter folder and an offline hub cache holding the same files as `org/pw-filter` (refs/main ->
    one snapshot, the way huggingface_hub stores a download)."""
    torch.manual_seed(3)
    folder = build_filter(FilterConfig(kind="positionwise", block_length=8, hidden=8, model_type="llada",
                                       features=["confidence", "margin", "stable", "masked"], threshold=0.4)
                          ).save_pretrained(tmp_path / "pw")
    repo = tmp_path / "hub" / "models--org--pw-filter"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # `org/pw-filter` is no folder here: the Hub cache answers
    return folder


def _decode(model, plan):
    torch.manual_seed(1)
    ids = torch.randint(2, 20, (3, 6))
    return decode(model, SPEC, ids, torch.ones_like(ids), plan, DecodeConfig(gen_length=32, block_length=8))


@pytest.mark.parametrize("hub_id", ["org/pw-filter", f"org/pw-filter@{COMMIT}", "org/pw-filter@main"])
def test_a_filter_from_the_hub_cache_decodes_like_its_folder(model, hub, hub_id):
    local = _decode(model, f"learned:path={hub},eot={hub}+eotp")
    remote = _decode(model, f"learned:path={hub_id},eot={hub_id}+eotp")
    assert torch.equal(local.sequences, remote.sequences) and torch.equal(local.nfe, remote.nfe)
    # and the filter matters here: the same plan without it decodes differently
    assert not torch.equal(local.nfe, _decode(model, "vanilla+eotp").nfe)
    assert resolve_filter(hub_id).parent.name == "snapshots"


def test_the_hub_id_stays_in_the_canonical_spec(model, hub):
    from learn2pd.decoding.plan import make_plan

    plan = make_plan("learned:path=org/pw-filter+eotp")
    assert "path=org/pw-filter," in plan.describe()
    assert make_plan(plan.describe()).describe() == plan.describe()


def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(hub, tmp_path):
    shutil.copytree(hub, tmp_path / "org" / "pw-filter")
    assert resolve_filter("org/pw-filter").resolve() == tmp_path / "org" / "pw-filter"


def test_an_uncached_repo_offline_is_one_clear_error(hub):
    with pytest.raises(FileNotFoundError, match=r"no filter at org/missing: .*Hub repository org/missing.*OFFLINE"):
        resolve_filter("org/missing")
    with pytest.raises(FileNotFoundError, match="org/pw-filter@v9"):
        resolve_filter("org/pw-filter@v9")


META = {"model": "GSAI-ML/LLaDA-8B-Instruct", "weights": "a1b2c3d4e5f60718", "model_type": "llada",
        "num_prompts": 2640, "tasks": "train:suite", "mode": "oracle-replay", "reference_plan": "vanilla",
        "decoding": {"gen_length": 256}, "dtype": "bfloat16"}


def test_the_model_card_names_base_model_fingerprint_traces_metrics_threshold_block_and_use():
    cfg = {"kind": "learn2pd", "block_length": 32, "threshold": 0.96, "features": ["confidence"],
           "training": {"traces": "outputs/traces/llada-8b", "epochs": 40, "lr": 0.003, "best_val_loss": 0.0812,
                        "test/auroc": 0.97812, "test/false_accept_rate": 0.0345}}
    card = model_card(cfg, META, "org/llada-8b-filter")
    assert card.startswith("---\n") and 'base_model: "GSAI-ML/LLaDA-8B-Instruct"' in card
    for text in ("a1b2c3d4e5f60718", "| threshold | 0.96 |", "| block length | 32 |", "outputs/traces/llada-8b",
                 "2640 prompts", "| auroc | 0.9781 |", "| false_accept_rate | 0.0345 |",
                 '--policy "learned:path=org/llada-8b-filter+eotp"', 'from_pretrained("org/llada-8b-filter")'):
        assert text in card, text
    eot = model_card({**cfg, "kind": "eot"}, META, "org/llada-8b-eot")
    assert "End-of-Text predictor" in eot and "eot=org/llada-8b-eot+eotp" in eot
    local = model_card(cfg, META, folder="outputs/filters/mine")  # not pushed: named by its folder
    assert "# outputs/filters/mine: a learn2pd" in local and '"learned:path=outputs/filters/mine+eotp"' in local


def test_push_uploads_the_filter_with_its_card(hub, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))

    def upload(self, folder_path, repo_id, allow_patterns, commit_message):  # the network call, recorded
        from pathlib import Path

        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir() if p.name in allow_patterns}
        calls.append(("upload", repo_id, files))
        return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(HfApi, "upload_folder", upload)
    assert push_filter(hub, "org/new-filter", META) == "https://hub/org/new-filter/commit/1"
    (_, created, kw), (_, uploaded, files) = calls
    assert created == uploaded == "org/new-filter" and kw["exist_ok"]
    assert set(files) == {"config.json", "model.safetensors", "README.md"}
    assert b"org/new-filter" in files["README.md"] and b"a1b2c3d4e5f60718" in files["README.md"]
    assert files["model.safetensors"] == (hub / "model.safetensors").read_bytes()
    assert load_filter(hub).config.threshold == 0.4  # the folder still loads (the card is beside it)


def test_a_bad_repo_id_fails_before_training(capsys):
    from learn2pd.trainers.train_filter import main

    assert main(["--traces", "/no/such", "--push-to-hub", "not a repo", "--wandb", "false"]) == 2
    assert "is not a Hub repository id" in capsys.readouterr().err
