"""The ``tl-diffusion-prior`` command line. Nothing in the library imports this package."""
