"""The evaluation report: :func:`run_evaluation` measures, :class:`EvalReport` holds the numbers,
:func:`write_report` writes ``report.json``, ``report.md`` and the figures."""

from tl_diffusion_prior.evaluate.report.run import run_evaluation
from tl_diffusion_prior.evaluate.report.types import EvalReport
from tl_diffusion_prior.evaluate.report.write import write_report

__all__ = ["EvalReport", "run_evaluation", "write_report"]
