"""The ``colpg`` command line, for people who never write Python.

The library logs and raises; only this package prints. Every colpg error ends the command
with a one-paragraph message on stderr and exit status 1. Each module registers its commands
on the apps of colpg.cli.apps, in the order ``colpg --help`` lists them.
"""

from colpg.cli import cluster_commands, db_commands, index_commands, search_commands, service_commands  # noqa: F401  (registration)
from colpg.cli.apps import app

__all__ = ["app"]
