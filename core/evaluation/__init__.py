"""Evaluation: reference perplexity and generation accuracy per checkpoint (HF and vLLM)."""
