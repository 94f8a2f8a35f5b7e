"""Evaluation of diffusion priors against baselines: fidelity, restoration, Frechet distance,
steering curves and the report. Import the submodules directly (e.g.
``tl_diffusion_prior.evaluate.report``)."""
