"""Render comparison on the sample rig: after a Generate, the button writes the rig's take
beside the photoreal take, with the sound; without a local Dimitra it says what is missing."""

import json
import subprocess

import pytest

from tests.addon.conftest import REPO, SERVER_PYTHON, SILENCE_SECONDS, SPEECH_SECONDS

pytestmark = pytest.mark.timeout(600)

# Run in the server's Python (PyAV, the tracker): what a viewer of the file would see.
_PROBE = """
import json, sys
import numpy as np
from dimitra.backend.media.audio import load_audio
from dimitra.backend.media.video import iter_frames
from dimitra.backend.tracking.face_tracker import FaceTracker
frames = [image for _, image in iter_frames(sys.argv[1])]
with FaceTracker() as tracker:
    faces = sum(tracker.track(np.ascontiguousarray(f[:, f.shape[1] // 2:])) is not None
                for f in frames)
print(json.dumps({"frames": len(frames), "height": frames[0].shape[0],
                  "width": frames[0].shape[1], "faces_on_the_right": faces,
                  "audio_s": len(load_audio(sys.argv[1])) / 16000}))
"""


@pytest.fixture(scope="module")
def take(sample_blend, addon, server, speech_file):
    import bpy

    from dimitra.blender_addon import generate_job

    generate_job.RESULTS.clear()
    bpy.ops.wm.open_mainfile(filepath=str(sample_blend), load_ui=False)
    bpy.context.view_layer.objects.active = bpy.data.objects["sample_face"]
    assert bpy.ops.dimitra.generate(audio_file=str(speech_file), server=server,
                                    start_frame=1) == {"FINISHED"}
    return bpy.context.scene


def test_the_button_writes_the_rig_beside_the_photoreal_take_with_the_sound(take, tmp_path):
    import bpy

    out = tmp_path / "comparison.mp4"
    frame_range = (take.frame_start, take.frame_end)
    assert bpy.ops.dimitra.render_comparison(filepath=str(out), python=SERVER_PYTHON) == {
        "FINISHED"}
    probe = subprocess.run([SERVER_PYTHON, "-c", _PROBE, str(out)], cwd=REPO, check=True,
                           capture_output=True, text=True)
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    seconds = SPEECH_SECONDS + SILENCE_SECONDS
    assert (seen["width"], seen["height"]) == (512, 256)        # the rig, then the render
    assert abs(seen["frames"] - seconds * take.render.fps) <= 1
    assert abs(seen["audio_s"] - seconds) < 0.1
    assert seen["faces_on_the_right"] == seen["frames"]
    assert (take.frame_start, take.frame_end) == frame_range     # the scene is as it was


def test_without_a_local_dimitra_the_button_says_what_to_set(take, tmp_path):
    import bpy

    from dimitra.blender_addon import preferences

    prefs = preferences.addon_preferences()
    old = (prefs.backend, prefs.python) if prefs is not None else None
    if prefs is not None:
        prefs.backend = "REMOTE"
    try:
        with pytest.raises(RuntimeError, match="Local backend and its Python"):
            bpy.ops.dimitra.render_comparison(filepath=str(tmp_path / "x.mp4"))
    finally:
        if prefs is not None:
            prefs.backend, prefs.python = old
    assert not (tmp_path / "x.mp4").exists()
