"""Lightning trainers: the tiny-dLLM pretrainer and the filter/EoT trainer.

The folder sits at the top of the repo but installs as `learn2pd.trainers` (package-dir in pyproject.toml).
"""
