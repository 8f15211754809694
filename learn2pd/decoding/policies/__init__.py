"""Decoding policies, one file each. Plans and spec strings are in `learn2pd.decoding.plan`."""

from learn2pd.decoding.policies.base import Policy, PolicySpecError
from learn2pd.decoding.policies.factor import FactorPolicy
from learn2pd.decoding.policies.localleap import LocalLeapPolicy
from learn2pd.decoding.policies.oracle import OraclePolicy
from learn2pd.decoding.policies.threshold import ThresholdPolicy
from learn2pd.decoding.policies.vanilla import VanillaPolicy

__all__ = ["Policy", "PolicySpecError", "VanillaPolicy", "ThresholdPolicy", "FactorPolicy", "LocalLeapPolicy",
           "OraclePolicy"]
