"""The scheduler: sends each task that declares a ``schedule`` label at its times.

Run exactly one (``just scheduler``): schedulers do not coordinate, so two would send every
scheduled task twice.
"""

from taskiq import TaskiqScheduler
from taskiq.schedule_sources import LabelScheduleSource

from app.worker.broker import broker

scheduler = TaskiqScheduler(broker, sources=[LabelScheduleSource(broker)])
