"""Group averages: sample weighting, plaintext exchange, secure aggregation."""
