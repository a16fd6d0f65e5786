"""Behavioural probes: what an over-memorized checkpoint costs (METHOD.md section 5)."""
