"""Diffusion priors over TransformerLens activations."""

__version__ = "0.1.0"
