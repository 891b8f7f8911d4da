"""The ``expkit`` command line: parse, call one library function, format the answer.

:mod:`.common` holds the app, the shared options and the error-to-exit-code mapping; each other
module registers one group of commands on it. Importing this package registers them all.
"""

from expkit.cli import cluster, cluster_setup, experiment, plan, reproduce, runs  # noqa: F401  (register commands)
from expkit.cli.common import app


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
