"""Where a `--ray` run happens: `local` (a Ray instance started for this run and stopped after
it), an ADDRESS (a running cluster: `ray start --head` prints it), or `auto` (the cluster this
machine belongs to, if `ray start` or RAY_ADDRESS says there is one, else local)."""

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

LOCAL, AUTO = "local", "auto"
OBJECT_STORE_BYTES = 256 << 20   # lines and reports are small; Ray's default takes 30% of RAM
CONNECT_TIMEOUT_S = 5.0


class ClusterError(RuntimeError):
    """Ray is missing, or the cluster asked for cannot be reached; the message says what to do."""


@dataclass
class Cluster:
    address: str        # what --ray said, resolved ("local" for a local instance)
    cpus: int           # CPUs the cluster offers (local: the ones given to it)


def import_ray():
    try:
        import ray
    except ImportError as error:
        raise ClusterError("--ray needs Ray: pip install 'dimitra-blender[scale]' (or `make "
                           "install` in a checkout)") from error
    return ray


@contextlib.contextmanager
def connect(where: str, local_cpus: int | None = None) -> Iterator[Cluster]:
    """Ray initialised for the block; a local instance is stopped at the end, a cluster is left
    running (only this run's workers go). `local_cpus`: CPUs for a local instance (default:
    this machine's)."""
    ray = import_ray()
    where, named_by = where.strip(), "--ray"
    if where == AUTO and os.environ.get("RAY_ADDRESS"):   # the user named the cluster
        where, named_by = os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    if where not in (LOCAL, AUTO):
        check_reachable(where, named_by)
    options = {"include_dashboard": False, "log_to_driver": False,
               "logging_level": logging.WARNING}
    local = {"num_cpus": local_cpus or os.cpu_count(), "object_store_memory": OBJECT_STORE_BYTES}
    try:
        if where == LOCAL:
            ray.init(address="local", **options, **local)
        elif where == AUTO:
            try:
                ray.init(address="auto", **options)
            except ConnectionError:   # no cluster on this machine: the embedded default
                where = LOCAL
                ray.init(address="local", **options, **local)
        else:
            ray.init(address=where, **options)
    except (ConnectionError, TimeoutError) as error:
        raise ClusterError(f"{named_by} {where}: cannot join the Ray cluster there ({error}); "
                           "check the address `ray start --head` printed, or use --ray local"
                           ) from error
    try:
        yield Cluster(where, int(ray.cluster_resources().get("CPU", 0)))
    finally:
        ray.shutdown()


def check_reachable(address: str, named_by: str = "--ray") -> None:
    """Fail in seconds, not after Ray's minute of retries, when nothing listens at ADDRESS
    (host:port, or ray://host:port for Ray Client)."""
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"{named_by} {address}: give auto, local, or a cluster's HOST:PORT "
                           "(the address `ray start --head` printed, e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise ClusterError(f"{named_by} {address}: no Ray cluster answers there ({reason}); "
                           "start one with `ray start --head` on that machine, or use --ray local"
                           ) from error
