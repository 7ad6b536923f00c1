"""Bad input, dead backends and cancel: a clear message, and the scene exactly as it was.

The job's ticks are called directly here (timers never fire with `import bpy`), as the UI's
timer would call them. Jobs that must still be open when the backend dies or the artist cancels
run on a server with the test-only stage delay (docs/PROTOCOL.md, Testing): held an hour as
their sampling starts, they end only through the failure under test, on any machine. The waits
below are bounds against a hang, not yardsticks of how fast the machine is.
"""

import shutil
import time

import pytest

from tests.addon.conftest import SERVER_PYTHON, scene_state

pytestmark = pytest.mark.timeout(240)
HOLD_S = 3600


def generate(**settings):
    import bpy

    return bpy.ops.dimitra.generate(**settings)


def refused(match: str, **settings) -> None:
    """Generate refuses with `match` in its message and changes nothing."""
    before = scene_state()
    with pytest.raises(RuntimeError, match=match):
        generate(**settings)
    assert scene_state() == before


def new_job(server: str, audio, **settings):
    """A GenerateJob as the operator makes it, not started."""
    import bpy

    from dimitra.blender_addon.generate_job import Backend, GenerateJob
    from dimitra.blender_addon.scene_inputs import GenerateSettings, audio_input, face_inputs

    values = GenerateSettings(audio_file=str(audio), server=server, **settings)
    return GenerateJob(values, face_inputs(values, bpy.context),
                       audio_input(values, bpy.context.scene), Backend(address=server),
                       bpy.context.scene)


def tick_until(job, condition, timeout: float) -> float:
    """Tick like the timer would (every 10 ms) until condition(job); returns seconds."""
    started = time.monotonic()
    while not condition(job):
        assert time.monotonic() - started < timeout, f"stuck in {job.state}: {job.stage}"
        job.tick()
        time.sleep(0.01)
    return time.monotonic() - started


def test_no_mesh_selected(rig, speech_file, server):
    import bpy

    bpy.context.view_layer.objects.active = None
    refused("no face mesh: pick the face mesh", audio_file=str(speech_file), server=server)
    refused("face mesh 'Nose': no mesh object", mesh="Nose", audio_file=str(speech_file),
            server=server)


def test_no_audio_and_missing_audio(rig, speech_file, server, tmp_path):
    import bpy

    from dimitra.blender_addon import blender_api

    refused("no audio: pick a sound strip", server=server)
    refused("no such file", audio_file=str(tmp_path / "gone.wav"), server=server)
    moved = shutil.copy(speech_file, tmp_path / "moved.wav")
    blender_api.add_sound_strip(bpy.context.scene, str(moved), 1, name="dialogue")
    moved.unlink()
    refused("sound strip 'dialogue': its file .*moved.wav is missing; relink it",
            audio_strip="dialogue", server=server)
    refused("sound strip 'narration': no strip of that name", audio_strip="narration",
            server=server)


def test_linked_mesh_is_refused(rig, sample_blend, speech_file, server):
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    with bpy.data.libraries.load(str(sample_blend), link=True) as (_source, target):
        target.objects = ["sample_face", "sample_face_rig"]
    for obj in target.objects:
        bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = bpy.data.objects["sample_face"]
    refused("linked from .*sample_face.blend: keys cannot be added to linked data. Make a "
            "library override", audio_file=str(speech_file), server=server)


def test_backend_down_fails_within_seconds(rig, speech_file):
    from tests.service.server_process import free_port

    before = scene_state()
    job = new_job(f"tcp://127.0.0.1:{free_port()}", speech_file)
    tick_until(job, lambda j: j.finished, 60)
    assert job.state == "failed"
    # Seconds: it gave up on the add-on's 3 s request timeout, not on anything longer.
    assert "no Dimitra server answered at tcp://127.0.0.1:" in job.message
    assert "within 3.0 s" in job.message
    assert scene_state() == before


def test_backend_killed_mid_job(rig, speech_file):
    from tests.service.server_process import ServerProcess

    doomed = ServerProcess("--workers", "1", python=SERVER_PYTHON, stage_delay=HOLD_S)
    before = scene_state()
    job = new_job(doomed.address, speech_file)
    try:
        tick_until(job, lambda j: j.stage == "sampling", 120)
        doomed.kill()
        tick_until(job, lambda j: j.finished, 60)
        assert job.state == "failed"
        assert "went silent for 5 s" in job.message     # the add-on's silence timeout
        assert scene_state() == before
    finally:
        doomed.kill()
        job.join(30)   # its client thread ends once the server is gone: none outlives the test


def test_cancel_while_generating(rig, speech_file):
    from tests.service.server_process import ServerProcess, wait_until

    held = ServerProcess("--workers", "1", python=SERVER_PYTHON, stage_delay=HOLD_S)
    before = scene_state()
    job = new_job(held.address, speech_file)
    try:
        tick_until(job, lambda j: j.stage == "sampling", 120)
        job.cancel()
        tick_until(job, lambda j: j.finished, 60)
        assert job.state == "cancelled"
        assert job.message == "Dimitra: cancelled; nothing was changed"
        assert scene_state() == before
        # The backend dropped the job too (held, it would run for an hour).
        assert wait_until(lambda: server_load(held.address)["running"] == 0, 60)
        assert server_load(held.address) == {"running": 0, "queued": 0}
    finally:
        held.kill()
        job.join(30)


def server_load(address: str) -> dict:
    from dimitra.backend.protocol.client import DimitraClient

    with DimitraClient(address) as client:
        return client.info()["load"]


def test_cancel_while_writing_keys_rolls_back(rig, speech_file, server, monkeypatch):
    from dimitra.blender_addon import generate_job

    keys = rig["face"].data.shape_keys
    keys.key_blocks["jawOpen"].keyframe_insert("value", frame=3)   # an artist's action
    before = scene_state()
    monkeypatch.setattr(generate_job, "TICK_BUDGET_S", 0.0)        # one curve per tick
    job = new_job(server, speech_file)
    tick_until(job, lambda j: j.state == "writing", 120)
    job.tick()
    job.tick()
    assert job.state == "writing" and keys.animation_data.action.name == "Dimitra line_one"
    job.cancel()
    job.tick()
    assert job.state == "cancelled"
    assert scene_state() == before


def test_timer_is_registered_while_running_and_gone_after(rig, speech_file, server):
    import bpy

    from dimitra.blender_addon import generate_job

    job = generate_job.start(new_job(server, speech_file), use_timer=True)
    assert bpy.app.timers.is_registered(job.timer)
    with pytest.raises(RuntimeError, match="already running"):
        generate_job.start(new_job(server, speech_file), use_timer=False)
    generate_job.stop_all()
    assert not bpy.app.timers.is_registered(job.timer)
    assert job.state == "cancelled" and generate_job.active_job() is None
