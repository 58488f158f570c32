"""The scheduler: sends each task that declares a ``schedule`` label at its times.

Run exactly one (``just scheduler``): schedulers do not coordinate, so two would send every
scheduled task twice.
"""

from taskiq import TaskiqScheduler
from taskiq.schedule_sources import LabelScheduleSource

from app.core.logging import configure_logging
from app.settings import get_settings
from app.worker.broker import broker

# The worker's logging is set up by the app's lifespan; the scheduler runs no app, so here.
configure_logging(get_settings())

scheduler = TaskiqScheduler(broker, sources=[LabelScheduleSource(broker)])
