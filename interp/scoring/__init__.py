"""Batch scoring: the job runner, its executors, the long scores table."""
