"""collect-traces: schema, labels, skipped prompts, resume after a kill, and 2-process collection."""

import json
import shutil

import numpy as np
import pytest

from learn2pd.traces import CollectConfig, collect_traces, load_traces
from learn2pd.traces.store import read_metadata, shard_dirs


def _cfg(random_ckpt, out, **kw):
    base = dict(out=str(out), model=str(random_ckpt), tasks="train:short", num_prompts=6, gen_length=32,
                block_length=16, batch_size=2, reference_plan="vanilla", dtype="float32")
    return CollectConfig(**(base | kw))


def _rows(ds):
    return {t: ds[t].to_dict() for t in ("steps", "sequences")}


def test_oracle_replay_schema_labels_and_metadata(random_ckpt, tmp_path):
    path = collect_traces(_cfg(random_ckpt, tmp_path / "t"), progress=False)
    ds = load_traces(tmp_path / "t")
    steps, seqs = ds["steps"], ds["sequences"]
    assert sorted(seqs["prompt_id"]) == list(range(6))
    assert all(len(r) == 32 for r in seqs["reference"])
    for row in steps.select(range(min(40, len(steps)))):
        assert len(row["confidence"]) == 16 and row["length"] == 16
        assert all(m for c, m in zip(row["committed"], row["masked"]) if c)  # only masked positions commit
        assert all(0 <= c <= 1 for c in row["confidence"])
        # the oracle commits correct positions (or one forced position when none is correct)
        n_correct_committed = sum(c and lab for c, lab in zip(row["committed"], row["label"]))
        assert n_correct_committed == sum(row["committed"]) or sum(row["committed"]) == 1
        assert all(m >= 0 for m in row["margin"]) and all(e >= 0 for e in row["entropy"])
    # every block of every prompt is recorded and the oracle needs fewer steps than vanilla
    per_prompt = {}
    for pid, block in zip(steps["prompt_id"], steps["block"]):
        per_prompt.setdefault(pid, set()).add(block)
    assert all(b == {0, 1} for b in per_prompt.values())
    assert len(steps) < sum(seqs["nfe"])
    meta = read_metadata(path)
    assert meta["mode"] == "oracle-replay" and meta["decoding"]["gen_length"] == 32 and meta["model_config_hash"]
    assert meta["decoding"]["cache"] == "none"
    # the metadata carries the run identity checked on resume
    assert json.loads((tmp_path / "t" / "run.json").read_text()).items() <= meta.items()


def test_stuck_oracle_steps_record_the_models_prediction_and_a_false_label(random_ckpt):
    """A reference that no prediction matches at some positions makes the oracle force tokens there. The
    trace must keep the model's own (wrong) prediction with label False: the hardest negatives."""
    import torch

    from learn2pd.decoding.engine import DecodeConfig, decode
    from learn2pd.models.loading import load_model
    from learn2pd.traces.collector import StepRecorder

    model, tok, spec = load_model(random_ckpt, "float32")
    cfg = DecodeConfig(gen_length=32, block_length=16)
    ids = torch.tensor([tok("rev abc\n").input_ids, tok("sort 3 1\n").input_ids[:8]])
    mask = torch.ones_like(ids)
    ref = decode(model, spec, ids, mask, "vanilla", cfg).sequences.clone()
    never = tok.unk_token_id  # a token the vanilla decode did not produce (checked below)
    assert not (ref == never).any()
    ref[:, [3, 20]] = never  # stuck at these positions: no candidate can match
    recorder = StepRecorder([10, 11], 16)
    out = decode(model, spec, ids, mask, "oracle", cfg, reference=ref, observer=recorder)
    assert torch.equal(out.sequences, ref)  # the oracle still writes the reference
    table = recorder.table()
    forced = [(r, j) for r, row in enumerate(table["committed"]) for j, c in enumerate(row)
              if c and table["block_start"][r] + j in (3, 20)]
    assert len(forced) == 4  # both positions of both prompts were committed by force
    for r, j in forced:
        assert table["token"][r][j] != never and table["label"][r][j] is False
    labels = [lab for row in table["label"] for lab in row]
    assert any(labels)  # matching predictions are still labelled True


def test_reference_mode_records_vanilla_steps(random_ckpt, tmp_path):
    collect_traces(_cfg(random_ckpt, tmp_path / "r", mode="reference", num_prompts=3), progress=False)
    ds = load_traces(tmp_path / "r")
    assert len(ds["steps"]) == sum(ds["sequences"]["nfe"]) == 3 * 32  # one row per vanilla step
    last = [r for r in ds["steps"] if r["step"] == 15]
    # at a block's last step the one remaining masked position is committed, and it is final by definition
    assert all(sum(r["masked"]) == 1 and r["label"][r["masked"].index(True)] for r in last)


def test_resume_after_kill_gives_identical_dataset(random_ckpt, tmp_path):
    whole = collect_traces(_cfg(random_ckpt, tmp_path / "a"), progress=False)
    collect_traces(_cfg(random_ckpt, tmp_path / "b"), progress=False)
    shards = shard_dirs(tmp_path / "b")
    assert len(shards) == 3
    # simulate a kill: the last batch never finished (half-written temp shard), no merged output
    shutil.rmtree(shards[-1])
    shutil.rmtree(tmp_path / "b" / "traces")
    (tmp_path / "b" / "shards" / f"{shards[-1].name}.tmp").mkdir()
    resumed = collect_traces(_cfg(random_ckpt, tmp_path / "b"), progress=False)
    assert _rows(load_traces(resumed)) == _rows(load_traces(whole))
    assert len(shard_dirs(tmp_path / "b")) == 3  # nothing duplicated


def test_rerun_with_other_settings_or_weights_refuses_to_mix_shards(random_ckpt, tmp_path):
    import torch

    from learn2pd.models.loading import load_model

    folder = tmp_path / "model"
    shutil.copytree(random_ckpt, folder)
    collect_traces(_cfg(folder, tmp_path / "t", num_prompts=4), progress=False)
    with pytest.raises(ValueError, match="different reference_plan"):
        collect_traces(_cfg(folder, tmp_path / "t", reference_plan="vanilla+eotp"), progress=False)
    # the same folder and config retrained (other weights): refused too
    model, _, _ = load_model(folder)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)
    model.save_pretrained(folder)
    with pytest.raises(ValueError, match="different weights"):
        collect_traces(_cfg(folder, tmp_path / "t", num_prompts=4), progress=False)
    # more prompts with the same settings extend a collection
    collect_traces(_cfg(folder, tmp_path / "u", num_prompts=2), progress=False)
    more = collect_traces(_cfg(folder, tmp_path / "u", num_prompts=6), progress=False)
    assert sorted(load_traces(more)["sequences"]["prompt_id"]) == list(range(6))


def test_bad_prompts_are_skipped_and_listed(random_ckpt, tmp_path):
    tasks = tmp_path / "t.jsonl"
    tasks.write_text("\n".join(json.dumps(r) for r in [
        {"question": "rev ab", "answer": "ba"}, {"question": "", "answer": "x"},
        {"question": "rev " + "a" * 90, "answer": "a"}, {"question": "sort 2 1", "answer": "1 2"}]) + "\n")
    collect_traces(_cfg(random_ckpt, tmp_path / "s", tasks=str(tasks)), progress=False)
    skipped = [json.loads(line) for line in (tmp_path / "s" / "skipped.jsonl").read_text().splitlines()]
    assert [s["prompt_id"] for s in skipped] == [1, 2]
    assert "empty" in skipped[0]["reason"] and "exceeds context" in skipped[1]["reason"]
    assert load_traces(tmp_path / "s")["sequences"]["prompt_id"] == [0, 3]


def test_clear_errors(random_ckpt, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of oracle-replay, .*got 'greedy'"):
        collect_traces(_cfg(random_ckpt, tmp_path / "x", mode="greedy"))
    with pytest.raises(FileNotFoundError, match="collect-traces"):
        load_traces(tmp_path / "nothing")


def test_two_processes_match_one(random_ckpt, tmp_path):
    one = load_traces(collect_traces(_cfg(random_ckpt, tmp_path / "one"), progress=False))
    two = load_traces(collect_traces(_cfg(random_ckpt, tmp_path / "two", devices=2), progress=False))
    assert {p.name.split("-")[0] for p in shard_dirs(tmp_path / "two")} == {"rank0", "rank1"}
    # Ranks batch other prompts together (other left padding): decisions are identical, floats equal
    # to float32 rounding.
    a, b = _rows(two), _rows(one)
    assert a["sequences"] == b["sequences"]
    for col, values in b["steps"].items():
        if col in ("confidence", "margin", "entropy"):
            assert np.allclose(np.array(a["steps"][col]), np.array(values), atol=1e-5), col
        else:
            assert a["steps"][col] == values, col


def test_cli_config_and_overrides(random_ckpt, tmp_path, capsys):
    from learn2pd.traces.cli import build_config, main

    cfg = build_config(["--config", "configs/collect/tiny.yaml", "--num-prompts", "4", "--mode", "reference"])
    assert cfg.num_prompts == 4 and cfg.mode == "reference" and cfg.gen_length == 256
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_promts: 3\n")
    assert main(["--config", str(bad)]) == 2
    assert "unknown keys ['num_promts']" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no model folder" in capsys.readouterr().err


def test_eotp_reference_stops_at_the_end_of_text(random_ckpt, tmp_path):
    full = load_traces(collect_traces(_cfg(random_ckpt, tmp_path / "v", num_prompts=4), progress=False))
    cut = collect_traces(_cfg(random_ckpt, tmp_path / "e", num_prompts=4, reference_plan="vanilla+eotp"),
                         progress=False)
    ds = load_traces(cut)
    assert read_metadata(cut)["reference_plan"] == "vanilla+eotp"
    for seq in ds["sequences"]:
        assert seq["nfe"] <= 32
        if seq["end_position"] >= 0:  # everything after the end is padding, as written by the cut
            assert set(seq["reference"][seq["end_position"]:]) == {1}
    assert sum(ds["sequences"]["nfe"]) <= sum(full["sequences"]["nfe"])
    with pytest.raises(ValueError, match=r"reference_plan must be one of vanilla, vanilla\+eotp"):
        CollectConfig(reference_plan="threshold").validate()


def test_on_policy_records_the_plans_own_commits_labelled_against_the_reference(random_ckpt, tmp_path):
    """A parallel plan on a random model commits wrong tokens: the trace keeps those states, with the
    committed positions' labels saying whether they match the vanilla reference."""
    import torch

    cfg = _cfg(random_ckpt, tmp_path / "t", mode="on-policy", plan="threshold:tau=0.05")
    collect_traces(cfg, progress=False)
    ds = load_traces(tmp_path / "t")
    steps, seqs = ds["steps"], ds["sequences"]
    refs = {p: r for p, r in zip(seqs["prompt_id"], seqs["reference"])}
    committed = wrong = 0
    for row in steps:
        ref = refs[row["prompt_id"]][row["block_start"]:row["block_start"] + 16]
        assert row["label"] == [t == r for t, r in zip(row["token"], ref)]  # label = prediction == reference
        committed += sum(row["committed"])
        wrong += sum(c and not lab for c, lab in zip(row["committed"], row["label"]))
    assert wrong > 0  # unlike an oracle replay, the plan's own mistakes are in the trace
    # the plan commits several positions per step: fewer step rows than the vanilla reference's forwards
    assert len(steps) < sum(seqs["nfe"]) and committed == torch.tensor(seqs["reference"]).numel()
    assert read_metadata(tmp_path / "t")["plan"] == "threshold:tau=0.05"


@pytest.mark.parametrize("kw, needle", [({"mode": "on-policy"}, "needs `plan`"),
                                        ({"plan": "threshold"}, "goes with mode on-policy"),
                                        ({"mode": "on-policy", "plan": "oracle"}, "oracle-replay")])
def test_on_policy_config_mistakes(random_ckpt, tmp_path, kw, needle):
    with pytest.raises(ValueError, match=needle):
        collect_traces(_cfg(random_ckpt, tmp_path / "t", **kw), progress=False)
    assert not (tmp_path / "t").exists()


def test_on_policy_round_reuses_stored_references(random_ckpt, tmp_path):
    """A DAgger round reuses an earlier collection's reference decodes: the same traces as decoding them
    again; references of other decoding settings are refused."""
    first = _cfg(random_ckpt, tmp_path / "r0", mode="on-policy", plan="threshold:tau=0.3")
    collect_traces(first, progress=False)
    again = _rows(load_traces(collect_traces(_cfg(random_ckpt, tmp_path / "r1", mode="on-policy",
                                                  plan="threshold:tau=0.05"), progress=False).parent))
    reused = _rows(load_traces(collect_traces(_cfg(random_ckpt, tmp_path / "r2", mode="on-policy",
                                                   plan="threshold:tau=0.05", references=str(tmp_path / "r0")),
                                              progress=False).parent))
    assert reused == again
    with pytest.raises(ValueError, match="different decoding"):
        collect_traces(_cfg(random_ckpt, tmp_path / "r3", mode="on-policy", plan="threshold:tau=0.05",
                            block_length=32, references=str(tmp_path / "r0")), progress=False)
    assert not (tmp_path / "r3").exists()


def test_answer_reference_labels_against_the_expected_output_without_a_reference_decode(random_ckpt, tmp_path):
    from learn2pd.models.loading import load_tokenizer
    from learn2pd.tasks.loaders import load_problems

    collect_traces(_cfg(random_ckpt, tmp_path / "t", mode="on-policy", plan="threshold:tau=0.3",
                        reference_plan="answer"), progress=False)
    seqs = load_traces(tmp_path / "t")["sequences"]
    tok, problems = load_tokenizer(random_ckpt), load_problems("train:short", 6)
    for pid, ref, nfe, ok in zip(seqs["prompt_id"], seqs["reference"], seqs["nfe"], seqs["correct"]):
        ids = tok(problems[pid].answer, add_special_tokens=False).input_ids[:32]
        assert ref == ids + [ref[-1]] * (32 - len(ids)) and nfe == 0 and ok
    with pytest.raises(ValueError, match="built-in problems"):
        collect_traces(_cfg(random_ckpt, tmp_path / "u", mode="reference", reference_plan="answer"), progress=False)
