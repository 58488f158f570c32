"""``python -m app.worker [arguments of taskiq worker]``: ``taskiq worker``, with the service's
logging set up in its supervising process too.

``taskiq worker`` runs the tasks in worker processes that a parent process starts, restarts
after a crash and stops; that parent never imports the app, so its own lines (a worker
restarted, the shutdown) came out in the standard library's default format instead of as the
service's JSON. This sets the service's logging up in the parent first; each worker process
sets it up again when it starts the app.
"""

import sys
from collections.abc import Sequence

from taskiq.cli.worker.cmd import WorkerCMD

from app.core.logging import configure_logging
from app.settings import get_settings


def main(arguments: Sequence[str]) -> int:
    """Run ``taskiq worker`` with ``arguments``; its exit status."""
    configure_logging(get_settings())
    return WorkerCMD().exec(arguments) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
