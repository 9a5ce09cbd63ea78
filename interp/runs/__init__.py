"""The run format: ``run.json``, ``metrics.csv``, the checkpoint files and their loaders.

Only this package opens them (``docs/architecture.md``, "Run format")."""
