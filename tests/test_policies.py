import pytest
import torch

from learn2pd.decoding.plan import PolicySpecError, make_policy, parse_policy
from learn2pd.decoding.state import StepState, topk_mask


def state(conf, masked=None, block=None, quota=1):
    conf = torch.tensor(conf, dtype=torch.float64)
    B, G = conf.shape
    masked = torch.ones(B, G, dtype=torch.bool) if masked is None else torch.tensor(masked)
    block = torch.ones(B, G, dtype=torch.bool) if block is None else torch.tensor(block)
    return StepState(conf, torch.zeros(B, G, dtype=torch.long), masked, block, torch.zeros(B, dtype=torch.long),
                     torch.full((B,), quota), torch.arange(B))


def test_topk_mask_per_row_k_and_never_minus_inf():
    s = torch.tensor([[0.1, 0.9, 0.5, float("-inf")], [0.3, 0.2, float("-inf"), float("-inf")]])
    got = topk_mask(s, torch.tensor([2, 3]))
    assert got.tolist() == [[False, True, True, False], [True, True, False, False]]


def test_vanilla_commits_quota_of_most_confident_candidates_in_block():
    s = state([[0.9, 0.2, 0.8, 0.99]], masked=[[True, True, True, False]], block=[[True, True, True, True]], quota=2)
    assert make_policy("vanilla").select(s).tolist() == [[True, False, True, False]]


def test_threshold_forced_top1_and_tau():
    s = state([[0.3, 0.4, 0.2, 0.95], [0.91, 0.95, 0.1, 0.99]],
              block=[[True, True, True, False], [True, True, True, True]])
    got = make_policy("threshold:tau=0.9").select(s) & s.candidates
    assert got.tolist() == [[False, True, False, False], [True, True, False, True]]


def test_factor_rule_and_reference_edge_case():
    pol = make_policy("factor:factor=1.0")
    # thresholds by rank: -1, 1-1/3=0.667, 1-1/4=0.75, 1-1/5=0.8
    assert pol.select(state([[0.9, 0.7, 0.5, 0.1]])).tolist() == [[True, True, False, False]]
    # only the last candidate fails -> the public code commits all of them
    assert pol.select(state([[0.9, 0.8, 0.76, 0.1]])).tolist() == [[True, True, True, True]]
    assert pol.select(state([[0.2, 0.1, 0.05, 0.01]])).tolist() == [[True, False, False, False]]


def test_policy_spec_parsing_and_errors():
    assert parse_policy("threshold:tau=0.7") == ("threshold", {"tau": 0.7})
    assert make_policy("threshold:tau=0.5").tau == 0.5
    with pytest.raises(PolicySpecError, match="unknown policy"):
        make_policy("greedy")
    with pytest.raises(PolicySpecError, match="key=value"):
        make_policy("threshold:0.7")
    with pytest.raises(PolicySpecError, match="bad parameters"):
        make_policy("threshold:kappa=0.7")
    with pytest.raises(ValueError, match="tau"):
        make_policy("threshold:tau=1.5")
