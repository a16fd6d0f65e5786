"""Checkpoint merging: theta = theta_base + sum_i w_i delta_i, exactly, streamed tensor by tensor."""
