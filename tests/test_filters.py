"""Filters and their trainer: shapes and parameter counts, save/load, features, training on traces."""

import json

import numpy as np
import pytest
import torch

from learn2pd.filters.data import split_prompts, stable_counts
from learn2pd.filters.models import FilterConfig, build_filter, load_filter
from learn2pd.traces import CollectConfig, collect_traces


def test_learn2pd_filter_is_the_published_size():
    net = build_filter(FilterConfig())
    assert sum(p.numel() for p in net.parameters()) == 2112
    assert net(torch.rand(5, 32, 1)).shape == (5, 32)
    with pytest.raises(ValueError, match="blocks of 32"):
        net(torch.rand(5, 16, 1))


def test_positionwise_filter_any_block_length_and_roundtrip(tmp_path):
    cfg = FilterConfig(kind="positionwise", features=["confidence", "margin", "masked", "pos_in_block"])
    net = build_filter(cfg)
    x = torch.rand(3, 20, 4)
    net.save_pretrained(tmp_path / "f")
    again = load_filter(tmp_path / "f")
    assert torch.allclose(again(x), net(x))
    assert json.loads((tmp_path / "f" / "config.json").read_text())["features"] == cfg.features
    assert (tmp_path / "f" / "model.safetensors").is_file()


def test_bad_filter_configs():
    with pytest.raises(ValueError, match="unknown filter features"):
        FilterConfig(kind="positionwise", features=["confidence", "vibes"])
    with pytest.raises(ValueError, match="confidences only"):
        FilterConfig(kind="learn2pd", features=["confidence", "margin"])
    with pytest.raises(FileNotFoundError, match="train-filter"):
        load_filter("/no/such/filter")


def test_filter_config_of_an_older_version_still_loads(tmp_path):
    net = build_filter(FilterConfig(block_length=8, hidden=8))
    net.save_pretrained(tmp_path / "f")
    cfg_file = tmp_path / "f" / "config.json"
    raw = json.loads(cfg_file.read_text())
    assert "model_config_hash" not in raw
    cfg_file.write_text(json.dumps(raw | {"model_config_hash": "61759c2633058bcc"}))  # written before it was dropped
    x = torch.rand(2, 8, 1)
    assert torch.equal(load_filter(tmp_path / "f")(x), net(x))


def test_a_model_folder_is_not_taken_for_a_filter(random_ckpt):
    with pytest.raises(ValueError, match=f"{random_ckpt} looks like a model, not a filter.*train-filter"):
        load_filter(random_ckpt)


def test_truncated_filter_weights_name_the_file_and_the_fix(tmp_path):
    build_filter(FilterConfig(block_length=8, hidden=8)).save_pretrained(tmp_path / "f")
    weights = tmp_path / "f" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{weights} is corrupted or truncated .*re-export the filter or retrain"):
        load_filter(tmp_path / "f")


def test_stable_counts_reset_on_change_and_new_block():
    pid = np.array([0, 0, 0, 0, 1])
    block = np.array([0, 0, 0, 1, 0])
    step = np.array([0, 1, 2, 0, 0])
    tok = np.array([[5, 7], [5, 8], [5, 8], [5, 8], [5, 8]])
    assert stable_counts(pid, block, step, tok).tolist() == [[0, 0], [1, 0], [2, 1], [0, 0], [0, 0]]


def test_split_is_by_prompt_and_deterministic():
    ids = [i // 7 for i in range(700)]  # 100 prompts, 7 steps each
    a, b = split_prompts(ids, 0), split_prompts(ids, 0)
    assert a == b and not (a["train"] & a["val"]) and not (a["train"] & a["test"])
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (80, 10, 10)


@pytest.fixture(scope="module")
def small_traces(random_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("traces") / "t"
    collect_traces(CollectConfig(out=str(out), model=str(random_ckpt), num_prompts=20, gen_length=32, block_length=16,
                                 reference_plan="vanilla", dtype="float32",
                                 batch_size=10, mode="reference"), progress=False)
    return out


def test_train_filter_exports_logs_and_checks(small_traces, tmp_path, monkeypatch):
    from learn2pd.trainers.train_filter import TrainFilterConfig, train_filter

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = TrainFilterConfig(traces=str(small_traces), out=str(tmp_path / "flt"), epochs=3, batch_size=64,
                            filter={"kind": "learn2pd", "block_length": 16, "hidden": 16},
                            log_dir=str(tmp_path / "logs"))
    metrics = train_filter(cfg, progress=False)
    assert 0.0 <= metrics["test/auroc"] <= 1.0 and "test/false_accept_rate" in metrics
    net = load_filter(tmp_path / "flt")
    assert net.config.block_length == 16 and net.config.model_type == "llada"
    assert net.config.training["epochs"] == 3
    csv = next((tmp_path / "logs").rglob("metrics.csv")).read_text()
    assert "val/auroc" in csv and "train/loss" in csv and "test/false_accept_rate" in csv
    run = next((tmp_path / "logs").rglob("offline-run-*/*.wandb")).read_bytes()  # the offline W&B run
    assert b"val/auroc" in run and b"test/false_accept_rate" in run
    # a filter of another block length is refused with the fix named
    bad = TrainFilterConfig(traces=str(small_traces), out=str(tmp_path / "x"), epochs=1, wandb=False,
                            filter={"kind": "learn2pd", "block_length": 32})
    with pytest.raises(ValueError, match="block_length: 16"):
        train_filter(bad, progress=False)


def test_train_filter_cli_errors(tmp_path, capsys):
    from learn2pd.trainers.train_filter import main

    assert main(["--traces", str(tmp_path / "none"), "--wandb", "false"]) == 2
    assert "collect-traces" in capsys.readouterr().err


def test_false_accept_rate_at_recall_on_fixed_scores():
    from learn2pd.filters.compare import false_accept_rate_at_recall, threshold_at_recall

    prob = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.85, 0.65, 0.3])
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    assert threshold_at_recall(prob, labels, 0.5) == pytest.approx(0.8)  # top 2 of 4 positives
    far, t = false_accept_rate_at_recall(prob, labels, 0.5)
    assert t == pytest.approx(0.8) and far == pytest.approx(0.25)  # only 0.85 among the negatives
    far, t = false_accept_rate_at_recall(prob, labels, 1.0)
    assert t == pytest.approx(0.6) and far == pytest.approx(0.5)  # 0.85 and 0.65
    with pytest.raises(ValueError, match="no positive"):
        threshold_at_recall(prob, torch.zeros(8, dtype=torch.bool), 0.9)


def test_threshold_at_false_accept_rate_on_fixed_scores():
    from learn2pd.filters.compare import threshold_at_false_accept_rate

    prob = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.85, 0.65, 0.3])
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    assert threshold_at_false_accept_rate(prob, labels, 0.0) == pytest.approx(0.85)  # no negative above
    assert threshold_at_false_accept_rate(prob, labels, 0.25) == pytest.approx(0.65)  # one of four: 0.85
    assert threshold_at_false_accept_rate(prob, labels, 1.0) == 0.0
    assert threshold_at_false_accept_rate(prob, torch.ones(8, dtype=torch.bool), 0.0) == 0.0  # no negatives


def test_eot_threshold_is_calibrated_on_validation(small_traces, tmp_path):
    from learn2pd.decoding.policies.learned import LearnedPolicy
    from learn2pd.trainers.train_filter import FilterDataModule, TrainFilterConfig, train_filter

    cfg = TrainFilterConfig(traces=str(small_traces), out=str(tmp_path / "eot"), target="eot", epochs=2,
                            batch_size=64, filter={"kind": "eot", "block_length": 16}, wandb=False,
                            log_dir=str(tmp_path / "logs"), calibrate_false_accept=0.0)
    train_filter(cfg, progress=False)
    eot = load_filter(tmp_path / "eot")
    assert eot.config.training["calibrate_false_accept"] == 0.0
    data = FilterDataModule(str(small_traces), eot.config.features, 16, "eot", 64, seed=0)
    data.setup()
    feats, labels, mask = data.splits["val"].tensors
    with torch.no_grad():
        prob = torch.sigmoid(eot(feats))[mask]
    assert (~labels[mask]).any()  # there are negatives to refuse
    assert not ((prob > eot.config.threshold) & ~labels[mask]).any()  # no validation negative accepted
    flt = load_filter(tmp_path / "eot")  # any filter module serves as the commit filter here
    assert LearnedPolicy(flt, eot_module=eot).eot_threshold == eot.config.threshold
    assert LearnedPolicy(flt, eot_module=eot, eot_threshold=0.3).eot_threshold == 0.3


def test_families_keeps_only_those_prompts_and_refuses_a_family_not_collected(small_traces):
    from learn2pd.traces.store import load_traces
    from learn2pd.trainers.train_filter import FilterDataModule

    seqs = load_traces(small_traces)["sequences"]
    family = dict(zip(seqs["prompt_id"], seqs["family"]))
    keep = sorted(set(family.values()))[:2]
    full = FilterDataModule(str(small_traces), ["confidence"], 16, "filter", 64, seed=0)
    some = FilterDataModule(str(small_traces), ["confidence"], 16, "filter", 64, seed=0, families=keep)
    full.setup()
    some.setup()
    rows = lambda d: sum(len(s) for s in d.splits.values())  # noqa: E731
    steps = load_traces(small_traces)["steps"]["prompt_id"]
    assert rows(some) == sum(family[p] in keep for p in steps) < rows(full) == len(steps)
    with pytest.raises(ValueError, match=r"families: \['poetry'\] not in traces"):
        FilterDataModule(str(small_traces), ["confidence"], 16, "filter", 64, seed=0, families=["poetry"]).setup()
