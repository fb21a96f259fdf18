"""Progress bars that tell the truth: items done, rate, elapsed and ETA (rich, on stderr)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)


@contextmanager
def progress_bar(description: str, total: int, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """`with progress_bar("trial 1", 30, "prompts") as advance: ... advance(8)`; `advance(8, cached=True)`
    for items that took no work."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    disable = os.environ.get("REFLECTEVO_NO_PROGRESS") == "1"
    with Progress(*columns, console=console, disable=disable) as progress:
        task = progress.add_task(description, total=total, rate="")

        def advance(n: int = 1, cached: bool = False) -> None:
            state = progress.tasks[task]
            if cached:
                # Served from the generation cache: counted as done but kept out of the rate and the
                # ETA, which must describe the work still to do (rich's reset clears the rate samples).
                started = state.start_time
                progress.reset(task, completed=int(state.completed) + n, rate="cached")
                progress.tasks[task].start_time = started  # elapsed time stays the real one
                return
            progress.advance(task, n)
            speed = progress.tasks[task].speed
            if speed:
                progress.update(task, rate=f"{speed * 60:.1f}/min" if speed < 1 else f"{speed:.1f}/s")

        yield advance
