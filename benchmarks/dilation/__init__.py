"""The dilation-path benchmark: every sampler on the standard targets at an equal budget (see run.py)."""
