"""Analyses of a run over its checkpoints: the induction phase change, Fourier progress measures, memorised bits."""
