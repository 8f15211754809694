"""Lightning trainers: the tiny-dLLM pretrainer (and, later, the filter trainer)."""
