"""`dimitra bake --manifest lines.csv --ray ...`: the lines baked by a pool of Ray actors.

Each actor is a process that imports bpy, loads the model once and bakes line after line with
blender_addon.bake.LineBaker, the single-process bake's own per-line code (the reference view
and correspondence made once per rig, the output written atomically by the worker that made
it). The driver hands each worker its next line when it finishes one, so a line that crashes
its process costs that line only: it is reported, the worker is replaced, the rest go on.
Lines whose output exists are skipped, so a re-run after a crash or Ctrl+C bakes the rest.
Every path in the manifest must be the same file on every node (a shared folder).
"""

import atexit
import os
import re
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ...blender_addon.manifest import ManifestError, ManifestLine, missing_inputs
from .cluster import ClusterError, connect, import_ray
from .progress import BatchProgress


class BakeWorker:
    """One Ray actor (one process, one CPU): bpy, the model and per-rig correspondences, kept
    for every line it is given."""

    def __init__(self, settings):
        from ...blender_addon.bake import LineBaker

        started = time.perf_counter()
        # bpy 4.5's C++ exit handlers can deadlock (a static destructor waits on a thread that
        # is gone): a worker told to exit by Ray would hang on, orphaned, using CPU. Python's
        # exit handlers run first, and this one leaves before Blender's.
        atexit.register(_leave_now)
        self.baker = LineBaker(settings)
        self.baker.load_model()
        self.load_seconds = time.perf_counter() - started

    def describe(self) -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "load_seconds": round(self.load_seconds, 3)}

    def bake_line(self, line: ManifestLine) -> dict:
        return {**self.baker.bake_line(line), "worker": f"{socket.gethostname()}:{os.getpid()}"}


@dataclass
class RayBakeRun:
    reports: list[dict]                 # one per manifest line, in its order
    workers: list[dict] = field(default_factory=list)   # describe() of each worker started
    seconds: dict = field(default_factory=dict)   # wall time: joining Ray, starting the
                                                  # workers, baking the lines


def bake_on_ray(lines: list[ManifestLine], settings, where: str = "auto", workers: int = 0,
                progress: bool = True, worker_class: type = BakeWorker) -> RayBakeRun:
    """Bake `lines` on Ray (`where`: cluster.connect's auto, local or ADDRESS) with `workers`
    actors (default: every CPU the cluster offers). `worker_class`: BakeWorker, or a subclass
    (the tests crash a worker on purpose with one)."""
    check_lines(lines)
    todo = [line for line in lines if not line.out.exists()]
    skipped = {line.number: {**_named(line), "status": "skipped"}
               for line in lines if line.out.exists()}
    if not todo:
        return RayBakeRun([skipped[line.number] for line in lines])
    for line in todo:
        remove_partial_files(line.out)   # left by a worker killed mid-write in an earlier run
    ray = import_ray()
    wanted = min(workers or os.cpu_count() or 1, len(todo))
    joining = time.perf_counter()
    with connect(where, local_cpus=wanted) as cluster:
        starting = time.perf_counter()
        if cluster.cpus < 1:
            raise ClusterError(f"--ray {cluster.address}: the cluster offers no CPU to run on")
        count = min(workers or cluster.cpus, cluster.cpus, len(todo))
        if count < min(workers, len(todo)):   # more asked for than the cluster has CPUs
            print(f"dimitra bake: the cluster has {cluster.cpus} CPUs; {count} workers, not "
                  f"{workers}", file=sys.stderr)
        pool = _Pool(ray, worker_class, settings, count)
        baking = time.perf_counter()
        bar = BatchProgress(len(lines), len(skipped), "line", "bake", progress)
        done: dict[int, dict] = dict(skipped)
        try:
            _run(pool, todo, done, bar)
        except KeyboardInterrupt:
            print(f"\n{sum(r['status'] == 'ok' for r in done.values())} lines baked in this run; "
                  "run the same command again to bake the rest", file=sys.stderr)
            raise
        finally:
            bar.close()
            pool.stop()
        seconds = {"ray": starting - joining, "workers": baking - starting,
                   "lines": time.perf_counter() - baking}
        return RayBakeRun([done[line.number] for line in lines], pool.described, seconds)


def check_lines(lines: list[ManifestLine]) -> None:
    """Refuse a manifest with missing inputs or clashing outputs before any worker starts."""
    missing = missing_inputs(lines)
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise ManifestError(f"--manifest: {'; '.join(missing[:3])}{more}: no such file; fix "
                            "those lines or remove them (nothing was baked)")
    outs = [line.out.resolve() for line in lines]
    twice = sorted({str(out) for out in outs if outs.count(out) > 1})
    if twice:
        raise ManifestError(f"--manifest: several lines write {twice[0]}; give each line its "
                            "own out")
    for line in lines:
        parent = next((p for p in line.out.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise ManifestError(f"line {line.number}: out {line.out}: {parent} is a file, not a "
                                "folder; choose another out or --out-dir")


def remove_partial_files(out: Path) -> None:
    """atomic_path's temp files for `out` (.NAME.XXXX.partial.SUFFIX)."""
    if out.parent.is_dir():
        for leftover in out.parent.glob(f".{out.name}.*.partial*"):
            leftover.unlink(missing_ok=True)


def _run(pool: "_Pool", todo: list[ManifestLine], done: dict, bar: BatchProgress) -> None:
    """Keep one line in flight per worker until every line has a report."""
    ray = pool.ray
    waiting = deque(todo)
    in_flight = {}   # ObjectRef -> (worker, line)
    for worker in list(pool.workers):
        if waiting:
            line = waiting.popleft()
            in_flight[worker.bake_line.remote(line)] = (worker, line)
    try:
        while in_flight:
            _next_report(pool, in_flight, waiting, done, bar)
    except KeyboardInterrupt:   # the workers go first: one may be writing its line's file
        pool.stop()
        ray.wait(list(in_flight), num_returns=len(in_flight), timeout=30)
        for _, line in in_flight.values():
            remove_partial_files(line.out)
        raise


def _next_report(pool: "_Pool", in_flight: dict, waiting: deque, done: dict,
                 bar: BatchProgress) -> None:
    """Wait for a line to finish, note its report, give its worker the next line."""
    ray = pool.ray
    [ref], _ = ray.wait(list(in_flight), num_returns=1)
    worker, line = in_flight.pop(ref)
    try:
        report = ray.get(ref)
    except ray.exceptions.RayActorError as error:   # the process died: this line only
        report = _failed(line, _death(error))
        remove_partial_files(line.out)
        worker = pool.replace(worker)
    except ray.exceptions.RayError as error:
        report = _failed(line, _last_line(error))
    done[line.number] = report
    bar.update(failed=report["status"] != "ok")
    if waiting:
        line = waiting.popleft()
        in_flight[worker.bake_line.remote(line)] = (worker, line)


class _Pool:
    """The actors; each loads the model when it starts, and startup errors stop the run."""

    def __init__(self, ray, worker_class: type, settings, count: int):
        self.ray, self.settings, self.described = ray, settings, []
        self.actor_class = ray.remote(num_cpus=1, max_restarts=0)(worker_class)
        self.workers = [self.actor_class.remote(settings) for _ in range(count)]
        self.whereabouts = {worker: worker.describe.remote() for worker in self.workers}
        try:
            self.described = ray.get(list(self.whereabouts.values()))
        except ray.exceptions.RayError as error:
            self.stop()
            raise ClusterError(f"the Ray workers could not start: {_last_line(error)}") from error

    def replace(self, dead):
        self.workers.remove(dead)
        del self.whereabouts[dead]
        worker = self.actor_class.remote(self.settings)
        self.workers.append(worker)
        self.whereabouts[worker] = worker.describe.remote()
        return worker

    def stop(self) -> None:
        """Kill the actors: bpy can hang in its exit handlers after a render, and a cluster
        outlives this run. Ray reports a killed actor dead before its process has exited, so
        wait for this machine's worker processes to be gone: one may still be writing a file
        the caller is about to clean up."""
        started = list(self.whereabouts.values())   # describe() refs; a new worker's may pend
        ready = self.ray.wait(started, num_returns=len(started), timeout=0)[0] if started else []
        here = socket.gethostname()
        pids = []
        for ref in ready:
            try:
                described = self.ray.get(ref)
            except self.ray.exceptions.RayError:   # died before it could say where it runs
                continue
            if described["host"] == here:
                pids.append(described["pid"])
        for worker in self.workers:
            self.ray.kill(worker, no_restart=True)
        self.workers, self.whereabouts = [], {}
        _wait_until_gone(pids, timeout=30)


def _wait_until_gone(pids: list[int], timeout: float) -> None:
    """Return when none of these local processes runs any more (a zombie does not), or after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """Alive and not a zombie (Linux: /proc; elsewhere: the kernel's answer to signal 0)."""
    if os.name == "nt":   # os.kill there terminates; Ray's kill has done its best
        return False
    if Path("/proc/self").exists():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _leave_now() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _named(line: ManifestLine) -> dict:
    return {"line": line.number, "audio": str(line.audio), "out": str(line.out),
            "rig": str(line.rig)}


def _failed(line: ManifestLine, error: str) -> dict:
    return {**_named(line), "status": "failed", "error": error}


def _death(error: Exception) -> str:
    """What a line's report says when its worker died (Ray's own text is a paragraph)."""
    found = re.search(r"Worker exit type: (\w+)", str(error))
    how = f"exit type {found.group(1)}" if found else type(error).__name__
    return (f"the worker process died while baking it ({how}): killed, out of memory, or a "
            "crash in Blender or the model; the other lines went on")


def _last_line(error: Exception) -> str:
    """The message of a Ray error (its text ends with the worker's exception)."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__
