"""Unmasking policies trained by reinforcement learning (GRPO) with the frozen dLLM as the environment."""

from learn2pd.rl.grpo import clipped_loss, decision_weights, group_advantages, rollout_reward
from learn2pd.rl.net import PolicyConfig, UnmaskingPolicyNet, load_policy_net

__all__ = ["PolicyConfig", "UnmaskingPolicyNet", "clipped_loss", "decision_weights", "group_advantages",
           "load_policy_net", "rollout_reward"]
