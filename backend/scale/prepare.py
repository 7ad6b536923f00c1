"""`dimitra prepare ... --ray`: each clip a Ray task running dataset.prepare.run_one, the
single-process per-clip code (a clip's files written by the task, nothing of a failed one).
The caller (dataset.prepare.run_prepare) writes the index once, from the records yielded here.
The dataset folder must be the same folder on every node (a shared folder)."""

from collections.abc import Iterator
from pathlib import Path

from ..dataset.index import ClipRecord
from ..dataset.prepare import ClipSource, failed_record, run_one
from .cluster import connect, import_ray


def prepare_on_ray(sources: list[ClipSource], dataset: Path, features: tuple[str, ...],
                   where: str = "auto", jobs: int = 0) -> Iterator[ClipRecord]:
    """One record per source, as each finishes; `jobs` tasks at a time (default: every CPU of
    the cluster). A task whose process dies fails its clip alone."""
    ray = import_ray()
    with connect(where, local_cpus=jobs or None) as cluster:
        task = ray.remote(num_cpus=1, max_retries=0)(run_one)
        at_once = max(1, min(jobs or cluster.cpus, len(sources)))
        waiting = list(reversed(sources))
        in_flight = {}   # ObjectRef -> ClipSource
        while waiting or in_flight:
            while waiting and len(in_flight) < at_once:
                source = waiting.pop()
                in_flight[task.remote(source, dataset, features)] = source
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            source = in_flight.pop(ref)
            try:
                yield ray.get(ref)
            except ray.exceptions.RayError as error:   # the worker process died
                yield failed_record(source, f"the Ray worker died while preparing it "
                                            f"({type(error).__name__})")
