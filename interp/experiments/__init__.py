"""Experiments built of many runs: memorisation capacity and training sweeps, with their pages."""
