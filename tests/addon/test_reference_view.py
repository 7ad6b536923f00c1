"""One reference view (issue 18): Generate and `dimitra bake` render the face and choose the
camera the same way, so an artist gets what a batch bake gets.

The rigs here are turned away from Blender's front camera (the first view the add-on used to
try): it sees the side or the back of the head. Both paths must choose the view that sees the
face, the same one, and lay the landmarks where the face's own are (the messy rig's head is
on the 478-point topology: vertex i is landmark i).
"""

import threading

import numpy as np
import pytest

pytestmark = pytest.mark.timeout(300)

TURNS = {"side to the front camera": 90.0, "back to the front camera": 180.0}


def landmark_error(correspondence, rig) -> float:
    """Mean distance of the face's landmarks from where they sit on the rig, in inter-ocular
    distances (the outer eye corners, landmarks 33 and 263)."""
    valid = np.flatnonzero(correspondence.valid[:468])
    assert len(valid) > 300
    truth = rig.vertices[:468]
    error = np.linalg.norm(correspondence.points(rig)[valid] - truth[valid], axis=1).mean()
    return float(error / np.linalg.norm(truth[33] - truth[263]))


@pytest.mark.parametrize("turn", list(TURNS.values()), ids=list(TURNS))
def test_generate_and_bake_choose_the_same_view_of_a_turned_head(turn, addon, server,
                                                                 speech_file, tmp_path,
                                                                 monkeypatch):
    pytest.importorskip("mediapipe")     # the bake finds faces in this process
    import bpy

    from dimitra.blender_addon import generate_job, reference_view
    from dimitra.blender_addon.bake import BakeSettings, bake
    from dimitra.retarget.motion_file import save_motion
    from tests.blender.messy_rigs import build_messy_rig, facing_turn

    rig_path = build_messy_rig(tmp_path / "turned.blend", turn_degrees=turn)
    # The face looks along turn @ -Y: the camera that sees it looks the other way.
    expected = tuple(np.round(facing_turn(turn) @ [0.0, 1.0, 0.0], 6) + 0.0)

    render_threads = []
    real_render = reference_view.render

    def render(*args, **kwargs):
        render_threads.append(threading.current_thread())
        return real_render(*args, **kwargs)
    monkeypatch.setattr(reference_view, "render", render)

    # The add-on's Generate, through the backend service.
    generate_job.RESULTS.clear()
    bpy.ops.wm.open_mainfile(filepath=str(rig_path), load_ui=False)
    bpy.context.view_layer.objects.active = bpy.data.objects["Head"]
    assert bpy.ops.dimitra.generate(audio_file=str(speech_file), server=server) == {"FINISHED"}
    take = generate_job.RESULTS["Dimitra line_one"]
    rig = take.rig
    assert landmark_error(take.correspondence, rig) < 0.15, take.view and take.view.tried
    # Rendered off Blender's main thread (the UI never waits on a render).
    assert render_threads and threading.main_thread() not in render_threads

    # The batch bake of the same rig, in this process (the take's motion: only the view and
    # the correspondence are made here).
    motion = save_motion(tmp_path / "take.npz", take.motion)
    baked = bake(speech_file, rig_path, tmp_path / "baked.blend", BakeSettings(motion=motion))
    assert landmark_error(baked.correspondence, rig) < 0.15, baked.view.tried

    assert take.view.forward == baked.view.forward == expected, (take.view.tried,
                                                                 baked.view.tried)
    assert take.view.method == baked.view.method == "render"
    # The same render and the same tracker: the same landmarks on the rig.
    gap = np.linalg.norm(take.correspondence.points(rig) - baked.correspondence.points(rig),
                         axis=1)
    assert np.median(gap) < 1e-3 * np.linalg.norm(rig.vertices[33] - rig.vertices[263])


def test_a_server_without_detect_still_generates(rig, server, speech_file, monkeypatch):
    """A backend older than `detect` (docs/PROTOCOL.md): the likeliest view alone, its
    landmarks from `animate`, as before."""
    import bpy

    from dimitra.backend.protocol import client as client_module
    from dimitra.blender_addon import generate_job

    def old_server(self, picture, cancel=None):
        raise client_module.ServiceError("bad_request", "unknown message type 'detect'", "type")
    monkeypatch.setattr(client_module.DimitraClient, "detect", old_server)
    generate_job._views.clear()
    assert bpy.ops.dimitra.generate(audio_file=str(speech_file), server=server) == {"FINISHED"}
    take = generate_job.RESULTS["Dimitra line_one"]
    assert take.view.method == "render" and len(take.view.tried) == 1
    assert landmark_error(take.correspondence, take.rig) < 0.15
