"""Behavioural probes: what an over-memorized checkpoint costs: less robust, less diverse, worse calibrated, leakier, worse out of distribution."""
