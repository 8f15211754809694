"""Decoding traces: what a filter is trained on. See `schema` for the layout."""

from learn2pd.traces.collector import CollectConfig, collect_traces
from learn2pd.traces.store import load_traces

__all__ = ["CollectConfig", "collect_traces", "load_traces"]
