"""Worker processes of `dimitra serve`: each loads the model once and runs one job at a time.

A worker talks to its server over a private DEALER socket (ipc:// in a 0700 folder, or
loopback TCP where ipc is missing). The frames between them are internal, not the public
protocol of docs/PROTOCOL.md; they are listed, with their WORKER_* names, in
backend.protocol.constants.

Cancelling is a shared integer: the server writes the job's `seq` into it, and the worker's
progress callback, called between stages and after every generated window, stops the job.
For tests only, DIMITRA_TEST_STAGE_DELAY_S holds every job at the start of its sampling stage
(docs/PROTOCOL.md, Testing).
Workers ignore SIGINT/SIGTERM (the server drains and then stops them) and quit on their own
when the server process is gone.
"""

import io
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np
import zmq

from ..protocol import messages as m
from ..protocol.constants import (
    WORKER_DETECTED,
    WORKER_ERROR,
    WORKER_FAILED,
    WORKER_PROGRESS,
    WORKER_READY,
    WORKER_RESULT,
    WORKER_STOP,
    worker_identity,
)

POLL_MS = 1000
# Test-only: seconds each job waits once its `sampling` progress is sent, or until cancelled.
# The service and add-on tests hold jobs open with it instead of betting on the machine's speed.
TEST_STAGE_DELAY_ENV = "DIMITRA_TEST_STAGE_DELAY_S"


def _test_stage_delay() -> float:
    return float(os.environ.get(TEST_STAGE_DELAY_ENV) or 0)


@dataclass
class WorkerSettings:
    model_path: str
    device: str = "auto"            # auto | cpu | cuda
    runtime: str = "auto"           # auto | torch | onnx
    torch_threads: int = 0          # 0 = torch's default
    max_audio_seconds: float = 600.0
    test_stage_delay_s: float = field(default_factory=_test_stage_delay)   # tests only; 0 = none


class JobStopped(Exception):
    """Raised inside a job when the server cancelled it."""


def start_worker(index: int, address: str, settings: WorkerSettings,
                 cancel_seq) -> multiprocessing.Process:
    """A new worker process (spawned: no fork of the server's sockets or threads)."""
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=worker_main, name=f"dimitra-worker-{index}", daemon=True,
                              args=(index, address, asdict(settings), cancel_seq))
    process.start()
    return process


def worker_main(index: int, address: str, settings: dict, cancel_seq) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    settings = WorkerSettings(**settings)
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.linger = 1000
    socket.routing_id = worker_identity(index)
    socket.connect(address)
    try:
        animator, device = _load_animator(settings)
    except Exception as error:  # noqa: BLE001 - the server reports it and exits
        traceback.print_exc()
        socket.send_multipart([WORKER_FAILED, f"{type(error).__name__}: {error}".encode()])
        return
    socket.send_multipart([WORKER_READY, _json({"pid": os.getpid(), "device": device,
                                                "runtime": animator.runtime,
                                                "model": animator.model_path.name})])
    parent = multiprocessing.parent_process()
    while parent is None or parent.is_alive():
        if not socket.poll(POLL_MS):
            continue
        frames = socket.recv_multipart()
        if frames[0] == WORKER_STOP:
            break
        socket.send_multipart(_run_job(animator, settings, frames, cancel_seq, socket))
        del frames  # the job's audio and picture
    socket.close()


def _load_animator(settings: WorkerSettings):
    from ..generation.animate import Animator

    if settings.torch_threads > 0:   # torch only when asked for: the CPU path runs without it
        import torch

        torch.set_num_threads(settings.torch_threads)
    animator = Animator(settings.model_path, settings.device, settings.runtime)
    return animator, animator.device


def _run_job(animator, settings: WorkerSettings, frames: list[bytes], cancel_seq,
             socket: zmq.Socket) -> list[bytes]:
    """One job -> the reply frames (result or error). Progress is sent as it happens."""
    from ...retarget.motion_file import write_motion
    from ..generation.animate import AnimateRequest
    from ..generation.generator import GenerationOptions
    from ..generation.reference import ReferenceFaceError
    from ..media.audio import AudioError

    _, seq, job, audio, reference = frames
    number = int(seq)
    job = json.loads(job)
    if job.get("kind") == "detect":
        return _run_detect(seq, reference)
    hold_s = settings.test_stage_delay_s

    def progress(stage: str, fraction: float) -> None:
        nonlocal hold_s
        if cancel_seq.value == number:
            raise JobStopped
        socket.send_multipart([WORKER_PROGRESS, seq, _json({"stage": stage, "fraction": fraction})])
        if stage == "sampling" and hold_s > 0:
            _hold(hold_s, lambda: cancel_seq.value == number)
            hold_s = 0.0   # once per job

    try:
        options = GenerationOptions(**job["options"])
        options.validate()
    except (ValueError, TypeError) as error:
        return _error(seq, m.BAD_REQUEST, f"options: {error}")
    try:
        request = AnimateRequest(audio, reference, options, job["fps"],
                                 max_audio_seconds=settings.max_audio_seconds)
        motion, _, ref = animator.animate(request, progress)
        motion.meta["audio"] = f"<{len(audio)} bytes sent to the service>"
        buffer = io.BytesIO()
        write_motion(buffer, motion)
        points = b""
        if job["correspondence"]:  # (478, 2) little-endian float32, reference image pixels
            points = np.ascontiguousarray(ref.landmarks_px[:, :2], dtype="<f4").tobytes()
        summary = {"frames": motion.frame_count, "fps": motion.fps,
                   "duration_s": round(motion.duration_s, 3),
                   "timing_s": motion.meta.get("timing_s", {}),
                   "image_size": list(ref.image_size), "worker_pid": os.getpid()}
        return [WORKER_RESULT, seq, _json(summary), buffer.getvalue(), points]
    except JobStopped:
        return _error(seq, m.CANCELLED, "the job was cancelled")
    except AudioError as error:
        return _error(seq, m.BAD_AUDIO, f"audio: {error}")
    except ReferenceFaceError as error:
        return _error(seq, m.BAD_REFERENCE, f"reference: {error}")
    except Exception as error:  # noqa: BLE001 - a bug or an unforeseen input: keep serving
        traceback.print_exc(file=sys.stderr)
        return _error(seq, m.INTERNAL, f"the server failed on this request ({type(error).__name__}:"
                      f" {error}); its log has the details. Please report it.")


def _run_detect(seq: bytes, picture: bytes) -> list[bytes]:
    """A `detect` job: the main face's landmarks in the picture, as `animate` finds them."""
    from ..generation.reference import ReferenceFaceError, load_reference

    try:
        reference = load_reference(picture)
    except ReferenceFaceError as error:
        return _error(seq, m.BAD_REFERENCE, f"picture: {error}")
    except Exception as error:  # noqa: BLE001 - a bug or an unforeseen input: keep serving
        traceback.print_exc(file=sys.stderr)
        return _error(seq, m.INTERNAL, f"the server failed on this picture ({type(error).__name__}:"
                      f" {error}); its log has the details. Please report it.")
    points = np.ascontiguousarray(reference.landmarks_px[:, :2], dtype="<f4").tobytes()
    summary = {"image_size": list(reference.image_size), "worker_pid": os.getpid()}
    return [WORKER_DETECTED, seq, _json(summary), points]


def _hold(seconds: float, cancelled) -> None:
    """The test-only stage delay: wait `seconds`, or until the job is cancelled or the server
    is gone (no orphan waits out an hour). It does not stop the job itself, so a cancelled job
    still stops at the real check, after a window."""
    parent = multiprocessing.parent_process()
    deadline = time.monotonic() + seconds
    while not cancelled() and (parent is None or parent.is_alive()) \
            and time.monotonic() < deadline:
        time.sleep(0.05)


def _error(seq: bytes, code: str, message: str) -> list[bytes]:
    return [WORKER_ERROR, seq, _json({"code": code, "message": message})]


def _json(value: dict) -> bytes:
    return json.dumps(value).encode()
