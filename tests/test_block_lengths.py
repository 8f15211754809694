"""Filters for any block length, thresholds chosen by decoding, and the block-length sweep."""

import json

import pytest
import torch

from learn2pd.decoding.engine import DecodeConfig, decode
from learn2pd.decoding.plan import make_plan
from learn2pd.evaluation.sweep import _knob, block_sweep, oracle_gap
from learn2pd.filters.calibrate import pick, threshold_for
from learn2pd.filters.models import FilterConfig, build_filter, serves_any_block
from tests.test_learned import SPEC


@pytest.fixture(scope="module")
def model(small_llada):
    return small_llada


def _filter(tmp_path, name, **kw):
    torch.manual_seed(0)
    cfg = FilterConfig(kind="positionwise", block_length=8, hidden=8, model_type="llada", **kw)
    build_filter(cfg).save_pretrained(tmp_path / name)
    return tmp_path / name


def test_a_positionwise_score_does_not_depend_on_the_window_width():
    """Why one filter serves every block length: a position's logit is the same in a window of its block's
    width and in a wider, zero-padded one (the convolution is local)."""
    net = build_filter(FilterConfig(kind="positionwise", features=["confidence", "margin", "masked", "position"]))
    torch.manual_seed(3)
    feats = torch.rand(4, 20, 4)
    padded = torch.nn.functional.pad(feats, (0, 0, 0, 236))
    assert torch.allclose(net(feats), net(padded)[:, :20], atol=1e-6)


def test_masked_left_counts_the_masked_positions_in_a_fixed_window_to_the_left():
    from learn2pd.filters.features import block_features, masked_left

    m = torch.tensor([[1, 1, 0, 1, 0, 0]], dtype=torch.bool)
    assert masked_left(m, window=2).mul(2).tolist() == [[0, 1, 2, 1, 1, 1]]
    # the same value in a wider block padded with masked positions on the right: block-length free
    wide = torch.cat([m, torch.ones(1, 10, dtype=torch.bool)], 1)
    assert torch.equal(masked_left(wide)[:, :6], masked_left(m))
    f = block_features(["masked_left"], confidence=torch.zeros(1, 6), masked=m, length=torch.tensor([4]))
    assert f[0, :, 0].mul(32).tolist() == [0, 1, 2, 2, 0, 0]  # zero beyond the block's length


def test_which_filters_serve_any_block():
    assert serves_any_block(FilterConfig(kind="positionwise", features=["confidence", "position"]))
    assert not serves_any_block(FilterConfig(kind="positionwise", features=["confidence", "pos_in_block"]))
    assert not serves_any_block(FilterConfig())  # the published MLP reads exactly its block length


def test_an_any_block_filter_decodes_full_diffusion_and_the_mlp_is_refused(model, tmp_path):
    pw, mlp = _filter(tmp_path, "pw", features=["confidence", "margin", "masked", "position"]), tmp_path / "mlp"
    build_filter(FilterConfig(block_length=8, hidden=8, model_type="llada")).save_pretrained(mlp)
    ids = torch.randint(2, 20, (3, 6), generator=torch.Generator().manual_seed(1))
    full = DecodeConfig(gen_length=32, block_length=32)
    never = decode(model, SPEC, ids, torch.ones_like(ids), f"learned:path={pw},threshold=1.0", full)
    van = decode(model, SPEC, ids, torch.ones_like(ids), "vanilla", full)
    assert torch.equal(never.sequences, van.sequences)  # the filter read the whole 32-wide block, accepted none
    always = decode(model, SPEC, ids, torch.ones_like(ids), f"learned:path={pw},threshold=0.0", full)
    assert always.nfe.tolist() == [1, 1, 1]  # and with everything accepted: one forward for the whole region
    with pytest.raises(ValueError, match="trained for blocks of 8"):
        decode(model, SPEC, ids, torch.ones_like(ids), f"learned:path={mlp}", full)


def test_threshold_for_prefers_the_block_then_the_nearest():
    cal = {"32": 0.9, "256": 0.7}
    assert threshold_for(cal, 32, 0.96) == 0.9 and threshold_for(cal, 256, 0.96) == 0.7
    assert threshold_for(cal, 64, 0.96) == 0.9  # log2 distance 1 from 32, 2 from 256
    assert threshold_for(cal, 128, 0.96) == 0.7  # 1 from 256, 2 from 32
    assert threshold_for({}, 64, 0.96) == 0.96


def test_pick_is_the_cheapest_within_budget_else_the_most_accurate():
    rows = [{"threshold": t, "accuracy": a, "nfe_mean": n}
            for t, a, n in ((0.5, 90.0, 3.0), (0.7, 99.6, 4.0), (0.8, 100.0, 4.0), (0.9, 100.0, 5.0))]
    assert pick(rows, 100.0, 0.5)["threshold"] == 0.8  # 0.7 and 0.8 tie on forwards: the safer one
    assert pick(rows, 100.0, 10.0)["threshold"] == 0.5
    assert pick(rows, 101.0, 0.5)["threshold"] == 0.9  # none within budget: most accurate, then safest


def test_calibrate_writes_per_block_thresholds_that_learned_then_uses(tiny, tmp_path):
    """`learn2pd calibrate` on validation problems: the chosen threshold keeps accuracy within the budget of
    vanilla, lands in config.json, and a plan without a threshold decodes with it."""
    import shutil

    from learn2pd.cli import main
    from tests.conftest import ROOT

    filt = tmp_path / "pw"
    shutil.copytree(ROOT / "checkpoints" / "tiny-llada-filter-positionwise", filt)
    rc = main(["calibrate", "--filter", str(filt), "--tasks", "val:arith", "--num-samples", "6", "--gen-length", "32",
               "--block-lengths", "32", "--thresholds", "0.3,0.9,0.999", "--budget", "0", "--quiet"])
    assert rc == 0
    cfg = json.loads((filt / "config.json").read_text())
    run = cfg["training"]["calibration"]["runs"]["32"]
    chosen = cfg["thresholds"]["32"]
    row = next(r for r in run["rows"] if r["threshold"] == chosen)
    assert row["accuracy"] >= run["reference"]["accuracy"] or not run["within_budget"]
    assert all(r["nfe_mean"] >= row["nfe_mean"] for r in run["rows"] if r["accuracy"] >= run["reference"]["accuracy"])
    plan = make_plan(f"learned:path={filt}")
    plan.policy.check(DecodeConfig(gen_length=32, block_length=32), tiny[2])
    assert plan.policy.threshold == chosen and f"threshold={chosen}" in plan.describe()


def test_calibrate_best_reference_keeps_the_best_swept_accuracy_without_a_reference_decode(monkeypatch):
    from learn2pd.filters import calibrate as cal

    table = {0.5: (90.0, 2.0), 0.8: (99.8, 3.0), 0.95: (100.0, 4.0)}  # threshold -> accuracy, forwards
    decoded = []

    def fake_run(model, tok, spec, problems, plan, cfg, batch_size, progress):
        decoded.append(plan)
        t = float(plan.split("threshold=")[1].split(",")[0].split("+")[0])
        return {"accuracy": table[t][0], "nfe_mean": table[t][1]}

    monkeypatch.setattr(cal, "run_policy", fake_run)
    out = cal.calibrate(None, None, None, "F", [object()], DecodeConfig(gen_length=64), [32, 64],
                        thresholds=list(table), budget=0.5, reference="best")
    assert len(decoded) == 6 and all(p.startswith("learned:") for p in decoded)  # no reference plan decoded
    assert out["thresholds"] == {"32": 0.8, "64": 0.8}  # 99.8 is within 0.5 of the best, 100.0
    assert out["runs"]["32"]["reference"] == {"plan": "best", "accuracy": 100.0, "nfe_mean": 4.0}


def test_calibrate_refuses_heldout_problems(tmp_path, capsys):
    from learn2pd.cli import main
    from tests.conftest import ROOT

    rc = main(["calibrate", "--filter", str(ROOT / "checkpoints" / "tiny-llada-filter-positionwise"), "--tasks",
               "suite"])
    assert rc == 2 and "validation problems" in capsys.readouterr().err


def test_sweep_checks_every_pair_before_decoding(model, tmp_path):
    mlp = tmp_path / "mlp"
    build_filter(FilterConfig(block_length=8, hidden=8, model_type="llada")).save_pretrained(mlp)

    class Tok:  # never reached: the refusal comes first
        def __call__(self, *a, **k):
            raise AssertionError("decoded before checking")

    with pytest.raises(ValueError, match="at block 16"):
        block_sweep(model, Tok(), SPEC, ["p"], ["vanilla", f"learned:path={mlp}"], DecodeConfig(gen_length=16), [8, 16])


def test_oracle_gap_takes_the_cheapest_heuristic_near_vanilla():
    res = [{"policy": "vanilla", "accuracy": 100.0, "nfe_mean": 256.0},
           {"policy": "oracle+eotp", "accuracy": 100.0, "nfe_mean": 2.0},
           {"policy": "threshold:tau=0.5+eotp", "accuracy": 90.0, "nfe_mean": 2.5},
           {"policy": "threshold:tau=0.9+eotp", "accuracy": 99.5, "nfe_mean": 3.0},
           {"policy": "learned+eotp", "accuracy": 100.0, "nfe_mean": 2.1}]
    gap = oracle_gap(res)
    assert gap["heuristic"] == "threshold:tau=0.9+eotp" and gap["ratio"] == 1.5


def test_a_sweep_plots_each_plan_family_as_one_curve_labelled_by_its_threshold(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from learn2pd.evaluation.sweep import plot_sweep

    assert _knob("threshold:tau=0.85+eotp") == "0.85" and _knob("localleap+eotp") == ""
    assert _knob("learned:path=a/b,eot=c,threshold=0.9+eotp") == "0.9"
    res = [{"policy": p, "nfe_mean": n, "accuracy": a} for p, n, a in [
        ("threshold:tau=0.9+eotp", 5.6, 98.5), ("threshold:tau=0.7+eotp", 5.0, 91.5), ("localleap+eotp", 5.2, 95.5),
        ("learned:path=x/f,threshold=0.8+eotp", 5.1, 94.5), ("learned:path=x/f,threshold=0.9+eotp", 5.5, 97.5)]]
    drawn, plot = [], plt.Axes.plot

    def record(ax, xs, ys, **kw):
        drawn.append((kw["label"], list(xs), list(ys)))
        return plot(ax, xs, ys, **kw)

    monkeypatch.setattr(plt.Axes, "plot", record)
    plot_sweep({"blocks": {32: {"results": res}}}, tmp_path / "s.png")
    assert sorted(drawn) == [("learned(f)+eotp", [5.1, 5.5], [94.5, 97.5]), ("localleap+eotp", [5.2], [95.5]),
                             ("threshold+eotp", [5.0, 5.6], [91.5, 98.5])]  # ordered by forwards
    assert (tmp_path / "s.png").stat().st_size > 0
