"""Benchmark runner, metrics (accuracy, NFE, TPF, tokens/s, AUP), reports and plots."""
