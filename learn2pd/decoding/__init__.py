"""The decoding engine and its policies."""
