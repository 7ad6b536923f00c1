"""One Generate (or Re-solve) as a job that never freezes Blender's UI.

    main thread                           worker thread
    -----------                           -------------
    tick: start the worker           -->  start (local) backend, `info` over ZeroMQ
    tick: read the face's meshes     -->  choose the reference view (reference_view: render
          (a few per tick)                each likely view, `detect` on the backend, rank by
                                          the ray hits' fit), `animate` with the chosen render
    tick: progress from the queue    <--  progress(stage, fraction)
                                          solve, plan curves
    tick: write a few curves (budget) <-- solved
    tick: ... sound strip, undo step, done

`tick()` is registered with `bpy.app.timers` in the UI and called in a loop in background
mode (`run_to_completion`); tests call it directly (timers never fire with `import bpy`).
Each tick does bounded work (TICK_BUDGET_S of reading meshes or writing keys at most): the
reference renders are numpy, in the worker thread, never Workbench on the main thread. The
chosen view is kept per rig for the session. Until keys are written the scene is untouched; a
failure or cancel while writing rolls every change back.
"""

import queue
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from ..backend.protocol.client import (
    CurveKeys,
    DimitraClient,
    JobCancelled,
    ServiceError,
    detect_unsupported,
)
from ..backend.protocol.messages import BAD_REFERENCE
from ..retarget.correspond import Correspondence
from ..retarget.motion_file import Motion, MotionFileError, load_motion
from ..retarget.rig import RigDescription, RigError
from ..retarget.solve import SolveOptions, solve
from . import blender_api, local_backend
from .key_writer import KeyWriter, plan_curves
from .reference_view import (
    Snapshot,
    ViewChoice,
    canonical_reference,
    choose_view,
    likely_views,
    read_mesh,
    render_objects,
)
from .scene_inputs import Audio, FaceInputs, GenerateSettings

TICK_S = 0.05              # timer interval while a job runs
TICK_BUDGET_S = 0.012      # mesh reading or key writing per tick: under 30 ms a tick even
                           # when a slice runs long (the worker thread holds the GIL at times)
REQUEST_TIMEOUT_S = 3.0    # a backend must accept a job this fast ...
SERVER_SILENCE_S = 5.0     # ... and never stay silent longer during one


@dataclass
class Backend:
    """Where jobs go: a server address, the built-in backend, or a local backend to start from
    `python` (local_backend)."""
    address: str = ""
    curve: CurveKeys | None = None
    local_python: str = ""
    local_port: int = 0
    builtin: bool = False

    def connect(self, cancelled) -> str:
        if self.address:
            return self.address
        if self.builtin:
            return local_backend.ensure_builtin_running(cancelled=cancelled)
        return local_backend.ensure_running(self.local_python, self.local_port, cancelled)


@dataclass
class GeneratedResult:
    """What Re-solve and Show landmarks need again, without calling the backend."""
    motion: Motion
    correspondence: Correspondence
    rig: RigDescription
    mesh_names: list[str]
    armature_name: str | None
    start_frame: int
    audio_name: str
    settings: GenerateSettings
    report: dict = field(default_factory=dict)
    view: ViewChoice | None = None          # the reference view the motion was made from


# Action name -> its result, for this Blender session.
RESULTS: dict[str, GeneratedResult] = {}
_views: dict[str, ViewChoice] = {}   # what was drawn and the rig -> the view chosen


def solve_options(settings: GenerateSettings) -> SolveOptions:
    return SolveOptions(strength=settings.solve_strengths(), smoothing=float(settings.smoothing),
                        keys=settings.keys)


class GenerateJob:
    """States: reading -> waiting -> writing -> done | failed | cancelled."""

    def __init__(self, settings: GenerateSettings, face: FaceInputs, audio: Audio | None,
                 backend: Backend | None, scene, cached: GeneratedResult | None = None,
                 replacing=None):
        """cached (Re-solve): solve its motion again instead of asking the backend;
        replacing: the Action the result takes the place of."""
        self.settings, self.face, self.audio, self.backend = settings, face, audio, backend
        self.scene, self.cached, self.replacing = scene, cached, replacing
        self.state = "reading" if cached is None else "waiting"
        self.stage, self.fraction = ("reading the face" if cached is None else "solving"), 0.0
        self.message = ""               # the final report (or error) for the artist
        self.warnings: list[str] = list(audio.warnings) if audio else []
        self.actions: list[str] = []
        self.max_tick_s = 0.0           # the longest main-thread tick, for the benchmark
        self.ticks = 0
        self.timer = self.tick          # one bound method, so timers can find it again
        self.on_tick = None             # called after each tick (the UI shows the progress)
        self._messages: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._worker: threading.Thread | None = None
        self._writer: KeyWriter | None = None
        self._result: GeneratedResult | None = None
        self._modes = ({b.name: b.rotation_mode for b in face.armature.pose.bones}
                       if face.armature is not None else {})
        self._to_read: list | None = None          # meshes the reference render draws, unread
        self._parts: list = []
        self._snapshot: queue.Queue = queue.Queue()   # what the renders draw, to the worker
        self.view: ViewChoice | None = cached.view if cached is not None else None
        if cached is not None:
            self._start_worker()

    # -- state ---------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def cancel(self) -> None:
        """Ask the job to stop; the next tick ends it (the backend is told to cancel too)."""
        self._cancel.set()

    # -- main thread ---------------------------------------------------------------------------

    def tick(self) -> float | None:
        """One bounded step on the main thread. Returns the delay to the next tick, or None
        once finished (what bpy.app.timers expects)."""
        started = time.perf_counter()
        try:
            if not self.finished:
                self._tick()
        except Exception as error:  # noqa: BLE001 - never leave a half-changed scene behind
            traceback.print_exc()
            self._fail(f"Dimitra failed: {error}; nothing was changed")
        if self.on_tick is not None:
            try:
                self.on_tick(self)
            except Exception:  # noqa: BLE001 - a redraw problem must not stop the job
                traceback.print_exc()
        self.ticks += 1
        self.max_tick_s = max(self.max_tick_s, time.perf_counter() - started)
        return None if self.finished else TICK_S

    def _tick(self) -> None:
        if self._cancel.is_set() and self.state in ("reading", "writing"):
            self.abort()
            return
        if self.state == "reading":
            if self._worker is None:   # it reaches the backend while this thread reads
                self._start_worker()
                self._to_read = render_objects(self.face.rig, self.face.meshes)
                return
            if not self._worker.is_alive():   # the backend failed already: nothing to read
                self.state = "waiting"
                return
            if self._read_meshes(TICK_BUDGET_S):
                self._snapshot.put(Snapshot(self._parts))
                self.state = "waiting"
        elif self.state == "waiting":
            self._drain()
        elif self.state == "writing":
            if self._writer.step(TICK_BUDGET_S):
                self._finish_writing()
            else:
                self.fraction = 0.9 + 0.1 * self._writer.fraction

    def run_to_completion(self, timeout: float | None = None) -> None:
        """Tick until finished (background mode and scripts: no timers fire there)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            delay = self.tick()
            if delay is not None:
                time.sleep(min(delay, 0.01))
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                deadline = None

    def _read_meshes(self, budget_s: float) -> bool:
        """Copy the next meshes the reference renders draw (at least one, then while within
        budget_s); True once all are read."""
        started = time.perf_counter()
        while self._to_read:
            part = read_mesh(self._to_read.pop(0))
            if part is not None:
                self._parts.append(part)
            if time.perf_counter() - started > budget_s:
                break
        return not self._to_read

    def _drain(self, limit: int = 50) -> None:
        for _ in range(limit):
            try:
                kind, payload = self._messages.get_nowait()
            except queue.Empty:
                return
            if kind == "progress":
                self.stage, self.fraction = payload
            elif kind == "failed":
                self._fail(payload)
                return
            elif kind == "cancelled":
                self.abort()
                return
            elif kind == "solved":
                curves, self._result = payload
                self._start_writing(curves)
                return

    def _start_writing(self, curves) -> None:
        if self._cancel.is_set():
            self.abort()
            return
        result = self._result
        name = f"Dimitra {result.audio_name}"
        self._writer = KeyWriter(curves, self.face.meshes, self.face.armature,
                                 result.start_frame, name, self.replacing)
        self.state, self.stage, self.fraction = "writing", "writing keys", 0.9
        self._writer.begin()

    def _finish_writing(self) -> None:
        self.actions = self._writer.finish()
        result = self._result
        frames = next((len(c.values) for c in self._writer.curves), 0)
        if self.cached is None and self.audio is not None and self.audio.strip_name is None:
            blender_api.add_sound_strip(self.scene, str(self.audio.path), result.start_frame,
                                        name=f"Dimitra {result.audio_name}")
        last = result.start_frame + frames - 1
        self.scene.frame_end = max(self.scene.frame_end, last)   # never shorten the range
        for name in self.actions:
            RESULTS[name] = result
        verb = "re-solved" if self.cached is not None else "generated"
        self.message = (f"Dimitra {verb} {frames} frames from frame {result.start_frame} into "
                        f"{', '.join(self.actions)}")
        self.state, self.stage, self.fraction = "done", "done", 1.0
        _undo_push(f"Dimitra: {verb} {result.audio_name}")

    def _fail(self, message: str) -> None:
        if self._writer is not None:
            self._writer.rollback()
        self._cancel.set()   # the worker stops at its next check
        self.state, self.stage, self.message = "failed", "failed", message

    def abort(self) -> None:
        """End now as cancelled, rolling back any keys written."""
        if self._writer is not None:
            self._writer.rollback()
        self._cancel.set()
        self.state, self.stage = "cancelled", "cancelled"
        self.message = "Dimitra: cancelled; nothing was changed"

    def join(self, timeout: float = 10.0) -> None:
        if self._worker is not None:
            self._worker.join(timeout)

    # -- worker thread -------------------------------------------------------------------------

    def _start_worker(self) -> None:
        audio_bytes = self.audio.read() if self.cached is None else None
        self._worker = threading.Thread(target=self._work, args=(audio_bytes,),
                                        name="dimitra-generate", daemon=True)
        self._worker.start()

    def _work(self, audio: bytes | None) -> None:
        try:
            if self.cached is not None:
                motion, correspondence = self.cached.motion, self.cached.correspondence
            else:
                motion, self.view = self._generate(audio)
                correspondence = self.view.correspondence
            if self._cancel.is_set():
                raise JobCancelled()
            self._messages.put(("progress", ("solving", 0.85)))
            animation = solve(self.face.rig, correspondence, motion,
                              solve_options(self.settings))
            curves = plan_curves(animation, self._modes)
            cached = self.cached
            result = GeneratedResult(
                motion, correspondence, self.face.rig, [o.name for o in self.face.meshes],
                self.face.armature.name if self.face.armature is not None else None,
                cached.start_frame if cached else self.audio.start_frame,
                cached.audio_name if cached else self.audio.name, self.settings,
                animation.report, self.view)
            self._messages.put(("solved", (curves, result)))
        except JobCancelled:
            self._messages.put(("cancelled", None))
        except ServiceError as error:
            self._messages.put(("failed", f"Dimitra backend: {error}"))
        except local_backend.BackendStartError as error:
            self._messages.put(("failed", f"Dimitra backend: {error}"))
        except (RigError, MotionFileError, ValueError, OSError) as error:
            self._messages.put(("failed", f"Dimitra: {error}"))
        except Exception as error:  # noqa: BLE001 - reported to the artist, never lost
            traceback.print_exc()
            self._messages.put(("failed", (f"Dimitra failed unexpectedly: {error!r}; the "
                                           "console has the details")))

    def _wait_for_snapshot(self) -> Snapshot:
        while True:
            if self._cancel.is_set():
                raise JobCancelled()
            try:
                return self._snapshot.get(timeout=0.1)
            except queue.Empty:
                continue

    def _progress(self, stage: str, fraction: float) -> None:
        self._messages.put(("progress", (stage, 0.05 + 0.75 * float(fraction))))

    def _generate(self, audio: bytes) -> tuple[Motion, ViewChoice]:
        self._messages.put(("progress", ("connecting to the backend", 0.02)))
        address = self.backend.connect(self._cancel.is_set)
        options = self.settings.generation_options()
        fps = self.face.rig.fps
        with DimitraClient(address, timeout=REQUEST_TIMEOUT_S, server_silence=SERVER_SILENCE_S,
                           curve=self.backend.curve) as client:
            client.info()     # an unreachable backend is reported now, not after the render
            snapshot = self._wait_for_snapshot()
            try:
                view = self._choose_view(client, snapshot)
            except ServiceError as error:
                if not detect_unsupported(error):
                    raise
                return self._generate_legacy(client, snapshot, audio)
            reference = view.image if view.image is not None else canonical_reference()
            result = client.animate(audio, reference, options, fps, False, self._progress,
                                    self._cancel.is_set)
        return _motion_from_bytes(result.motion), view

    def _choose_view(self, client: DimitraClient, snapshot: Snapshot) -> ViewChoice:
        """reference_view.choose_view, the backend's `detect` finding the face on each render;
        kept for the session (one rig at a time)."""
        rig = self.face.rig
        key = f"{snapshot.fingerprint()} {rig.mesh_names} {rig.vertices.shape} " \
              f"{rig.triangles.shape}"
        if key in _views:
            return _views[key]

        def detect(image: bytes):
            try:
                return client.detect(image, self._cancel.is_set).points
            except JobCancelled:
                raise
            except ServiceError as error:
                if error.code == BAD_REFERENCE:
                    return None   # no face on this render
                raise
        view = choose_view(rig, snapshot, detect, self._view_progress)
        _views.clear()
        _views[key] = view
        return view

    def _view_progress(self, index: int, count: int) -> None:
        if self._cancel.is_set():
            raise JobCancelled()
        self._messages.put(("progress", (f"finding the face (view {index + 1} of {count})",
                                         0.02 + 0.03 * index / count)))

    def _generate_legacy(self, client: DimitraClient, snapshot: Snapshot,
                         audio: bytes) -> tuple[Motion, ViewChoice]:
        """A server older than `detect`: the likeliest view alone, its landmarks from
        `animate` (no ranking: docs/PROTOCOL.md)."""
        options, fps = self.settings.generation_options(), self.face.rig.fps
        results = []

        def detect_by_animating(image: bytes):
            try:
                results.append(client.animate(audio, image, options, fps, True,
                                              self._progress, self._cancel.is_set))
            except ServiceError as error:
                if error.code != BAD_REFERENCE:
                    raise
                return None
            return results[-1].reference_points
        view = choose_view(self.face.rig, snapshot, detect_by_animating, self._view_progress,
                           views=likely_views(self.face.rig)[:1])
        if not results:   # no face on the render: generate from the canonical face
            results.append(client.animate(audio, canonical_reference(), options, fps, False,
                                          self._progress, self._cancel.is_set))
        return _motion_from_bytes(results[-1].motion), view


def _motion_from_bytes(data: bytes) -> Motion:
    with tempfile.TemporaryDirectory(prefix="dimitra-") as work:
        path = Path(work) / "motion.npz"
        path.write_bytes(data)
        return load_motion(path)


def _undo_push(message: str) -> None:
    """An undo step for the new keys (not possible in background mode: no undo there)."""
    if bpy.app.background:
        return
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass


# ---------------------------------------------------------------------------------------------
# The one running job
# ---------------------------------------------------------------------------------------------

_active: GenerateJob | None = None


def active_job() -> GenerateJob | None:
    return _active


def start(job: GenerateJob, use_timer: bool) -> GenerateJob:
    """Make `job` the running one; with use_timer its ticks come from bpy.app.timers."""
    global _active
    if _active is not None and not _active.finished:
        raise RuntimeError("a Dimitra job is already running; wait for it or cancel it (Esc)")
    _active = job
    if use_timer:
        bpy.app.timers.register(job.timer, first_interval=0.0)
    return job


def stop_all() -> None:
    """Cancel the running job and unregister its timer (add-on unregister, tests)."""
    global _active
    job, _active = _active, None
    if job is None:
        return
    if bpy.app.timers.is_registered(job.timer):
        bpy.app.timers.unregister(job.timer)
    job.cancel()
    job.join()          # the worker tells the backend to cancel, then ends
    if not job.finished:
        job.abort()

