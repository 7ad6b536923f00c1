"""The motion preview: an MP4 a person can watch, the mesh drawn where the landmarks are."""

import numpy as np
import pytest

from dimitra.backend.demo import REFERENCE_IMAGE
from dimitra.backend.generation.preview import BACKGROUND, DIM, render_preview
from dimitra.backend.generation.reference import load_reference
from dimitra.backend.media.audio import load_audio
from dimitra.backend.media.video import iter_frames, probe_video
from dimitra.retarget.face import topology
from dimitra.retarget.motion_file import Motion

FPS = 25


@pytest.fixture(scope="module")
def reference():
    return load_reference(REFERENCE_IMAGE)


@pytest.fixture(scope="module")
def speaking(reference) -> Motion:
    """2 s of the reference face with the lower lip dropping and rising twice."""
    frames = 2 * FPS
    landmarks = np.repeat(reference.landmarks_px[None], frames, axis=0)
    lower_lip = list(topology.LIPS_OUTER[1:10]) + list(topology.LIPS_INNER[1:10])
    drop = 12 * np.sin(np.linspace(0, 2 * np.pi, frames)) ** 2
    landmarks[:, lower_lip, 1] += drop[:, None]
    return Motion(landmarks, np.zeros((frames, 6), np.float32), float(FPS))


def tone(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_the_preview_is_a_video_with_sound_and_the_mesh_over_the_picture(reference, speaking,
                                                                         tmp_path):
    path = render_preview(speaking, reference.image, tone(2.5), tmp_path / "preview.mp4")
    info = probe_video(path)
    assert (info.width, info.height) == (384, 384) and info.fps == pytest.approx(FPS)
    assert info.has_audio
    frames = [frame for _, frame in iter_frames(path)]
    assert len(frames) == speaking.frame_count
    assert len(load_audio(path)) / 16_000 == pytest.approx(2.0, abs=0.05)  # cut to the motion

    first = frames[0].astype(np.int16)
    dimmed = (reference.image * DIM).astype(np.int16)
    lips = reference.landmarks_px[list(topology.LIPS_OUTER), :2].round().astype(int)
    on_lips = np.abs(first - dimmed)[lips[:, 1], lips[:, 0]].sum(-1)
    assert np.median(on_lips) > 60
    assert np.abs(first - dimmed)[:40, :40].mean() < 6  # off the face: the dimmed picture

    # The lower lip moves in the video: frame 12 (lip down 12 px) differs from frame 0 there.
    chin_side = reference.landmarks_px[topology.LOWER_INNER_LIP, :2].round().astype(int)
    window = np.s_[chin_side[1]:chin_side[1] + 16, chin_side[0] - 20:chin_side[0] + 20]
    assert np.abs(frames[12][window].astype(int) - frames[0][window]).mean() > 5


def test_without_a_picture_the_mesh_is_drawn_on_a_dark_background(reference, speaking, tmp_path):
    path = render_preview(speaking, None, None, tmp_path / "dark.mp4", image_size=(384, 320))
    info = probe_video(path)
    assert (info.width, info.height) == (384, 320) and not info.has_audio
    _, first = next(iter_frames(path))
    assert np.abs(first[:40, :40].astype(int) - BACKGROUND).max() < 8
    eyes = reference.landmarks_px[list(topology.RIGHT_UPPER_LID), :2].round().astype(int)
    assert first[eyes[:, 1], eyes[:, 0]].max(-1).mean() > 120  # the lid line is bright

    # Without a size either, the frame is sized to hold the landmarks.
    path = render_preview(speaking, None, None, tmp_path / "sized.mp4")
    info = probe_video(path)
    assert 270 <= info.width <= 400 and 290 <= info.height <= 400
