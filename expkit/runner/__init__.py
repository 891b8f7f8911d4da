"""Drive an executor over a run's matrix: start a run, resume one (only what is missing)."""

from expkit.runner.driver import RunOutcome, default_workers, resume_run, start_run

__all__ = ["RunOutcome", "default_workers", "resume_run", "start_run"]
