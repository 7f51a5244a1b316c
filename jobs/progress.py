"""A progress line every so often while Spark stages run (Spark's own bar is for terminals)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from pyspark.sql import SparkSession


@contextlib.contextmanager
def stage_progress(
    spark: SparkSession, progress: Callable[[str], None], description: str, every: float = 30.0
) -> Iterator[None]:
    """While the block runs, name its Spark jobs `description` (as the Spark UI and its REST API
    show them) and report each active stage's finished/total tasks every `every` s."""
    context = spark.sparkContext
    context.setJobDescription(description)
    tracker = context.statusTracker()
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(every):
            for stage_id in tracker.getActiveStageIds():
                info = tracker.getStageInfo(stage_id)
                if info is not None:
                    progress(
                        f"stage {stage_id}: {info.numCompletedTasks}/{info.numTasks} "
                        f"tasks done, {info.numActiveTasks} running"
                    )

    thread = threading.Thread(target=report, name="itemsage-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        context.setJobDescription(None)
