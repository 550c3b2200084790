"""process_* metrics of every worker of an instance, told apart by a `worker` label.

The workers of `keygate serve --workers N` share the admin port (SO_REUSEPORT), so a
scrape reaches one of them at random and Prometheus cannot ask a particular worker. The
worker answering therefore reports every worker's process metrics: the standard names and
values of prometheus_client's ProcessCollector (CPU, resident and virtual memory, open and
maximum file descriptors, start time), read from /proc/<pid> of each worker, with
`worker="0"` … `worker="N-1"`. A `worker` index rather than a `pid` label: it is bounded
and stays the same across restarts, so a series is one worker slot, and
`sum by (instance) (...)` is the instance's total. One worker is `worker="0"`, the same
names and labels as with several.

Each worker records its pid in `<PROMETHEUS_MULTIPROC_DIR>/workers/<index>` when it starts
(`register_worker`); without that directory (one worker) only this process is reported.
Where /proc is missing (not Linux), nothing is reported, as with ProcessCollector itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

LABEL = "worker"


def workers_dir() -> Path | None:
    shared = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(shared) / "workers" if shared else None


def register_worker(index: int) -> None:
    """Record this process as worker `index`, for the process metrics of every worker."""
    folder = workers_dir()
    if folder is None:
        return
    folder.mkdir(exist_ok=True)
    path = folder / str(index)
    temporary = folder / f".{index}.{os.getpid()}"
    temporary.write_text(str(os.getpid()), encoding="ascii")
    temporary.replace(path)  # whole or absent: a scrape never reads half a pid


def registered_workers() -> list[tuple[str, int]]:
    """(worker index, pid) of every registered worker; this process alone when none are."""
    folder = workers_dir()
    if folder is None:
        return [("0", os.getpid())]
    found: list[tuple[str, int]] = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError):
                    found.append((entry.name, int(entry.read_text(encoding="ascii"))))
    return sorted(found, key=lambda item: int(item[0]))


class WorkerProcessCollector(Collector):
    """ProcessCollector's families for each worker, each sample labelled with its worker."""

    def __init__(self, proc: str = "/proc") -> None:
        self._pid = os.getpid()
        self._reader = ProcessCollector(pid=lambda: self._pid, proc=proc, registry=None)

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration: the families depend on the workers

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for worker, pid in registered_workers():
            self._pid = pid
            for source in self._reader.collect():  # empty for a process that is gone
                family = families.get(source.name)
                if family is None:
                    family = families[source.name] = Metric(
                        source.name, source.documentation, source.type, source.unit
                    )
                for sample in source.samples:
                    family.add_sample(
                        sample.name,
                        {**sample.labels, LABEL: worker},
                        sample.value,
                        sample.timestamp,
                    )
        yield from families.values()
