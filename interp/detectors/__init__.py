"""Detectors: one sub-package each, read through :mod:`interp.detectors.registry`."""
