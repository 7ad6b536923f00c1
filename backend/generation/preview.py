"""A watchable preview of motion: the landmark mesh drawn over the reference picture, with sound.

Frames are drawn one at a time as the encoder asks for them, so memory stays bounded for any
length. Drawing uses OpenCV's antialiased lines at 1/16 px precision (`shift=4`), so slow
motion does not crawl in whole-pixel steps.
"""

import functools
from pathlib import Path

import cv2
import numpy as np

from ...retarget.face import topology
from ...retarget.motion_file import Motion
from ..media.video import write_video
from .reference import frame_size_around

DIM = 0.6                       # the picture is darkened so the mesh reads over it
BACKGROUND = (24, 26, 30)       # RGB, when there is no picture
MAX_SIDE = 1024                 # larger frames are scaled down: a preview, not a render
_SHIFT = 4
_ONE = 1 << _SHIFT
MESH_COLOUR = (95, 120, 140)
# (loops, closed, RGB colour) of the features drawn over the mesh.
FEATURES = (
    ((topology.LIPS_OUTER,), True, (255, 70, 90)),
    ((topology.LIPS_INNER,), True, (255, 170, 60)),
    ((topology.RIGHT_UPPER_LID, topology.RIGHT_LOWER_LID,
      topology.LEFT_UPPER_LID, topology.LEFT_LOWER_LID), False, (60, 220, 255)),
    # Each brow is two chains: its lower edge (first five points), then its upper edge.
    ((topology.RIGHT_BROW[:5], topology.RIGHT_BROW[5:],
      topology.LEFT_BROW[:5], topology.LEFT_BROW[5:]), False, (255, 225, 80)),
    ((topology.JAW_LINE,), False, (235, 235, 235)),
)
IRIS_COLOUR = (90, 255, 120)


def render_preview(motion: Motion, reference_image: np.ndarray | None,
                   audio_16k: np.ndarray | None, out_path: str | Path,
                   image_size: tuple[int, int] | None = None) -> Path:
    """Write an H.264 MP4 of the motion's landmarks at its fps, with the audio; returns the path.

    reference_image: (H, W, 3) uint8 RGB whose pixel frame the landmarks are in, or None for
    a dark background. image_size: (width, height) of that pixel frame; by default the
    picture's, or without one the landmarks' extent with margins. audio_16k: (N,) float32 mono
    at 16 kHz starting at frame 0; cut to the motion's length.
    """
    if image_size is None:
        image_size = (frame_size_around(motion.landmarks) if reference_image is None
                      else (reference_image.shape[1], reference_image.shape[0]))
    width, height = image_size
    scale = min(1.0, MAX_SIDE / max(width, height))
    out_size = (max(2, round(width * scale)), max(2, round(height * scale)))
    if reference_image is None:
        background = np.empty((out_size[1], out_size[0], 3), np.uint8)
        background[:] = BACKGROUND
    else:
        resized = cv2.resize(np.asarray(reference_image, np.uint8), out_size,
                             interpolation=cv2.INTER_AREA)
        background = (resized * DIM).astype(np.uint8)
    # Picture-to-output scale per axis, in OpenCV's fixed point.
    to_fixed = np.array([out_size[0] / width, out_size[1] / height]) * _ONE
    if audio_16k is not None:
        audio_16k = np.asarray(audio_16k, np.float32)[:round(motion.duration_s * 16_000)]
    frames = (_draw(background, points[:, :2] * to_fixed) for points in motion.landmarks)
    return write_video(out_path, frames, motion.fps, audio_16k)


def _draw(background: np.ndarray, points: np.ndarray) -> np.ndarray:
    """One frame: background (H, W, 3) uint8 with the mesh of points (478, 2) fixed point."""
    frame = background.copy()
    if not np.isfinite(points).all():  # a frame without a face shows the picture alone
        return frame
    points = np.clip(np.round(points), -(1 << 24), 1 << 24).astype(np.int32)  # wild output
    thick = max(1, round(max(frame.shape[:2]) / 320))
    cv2.polylines(frame, points[_mesh_edges()], False, MESH_COLOUR, 1, cv2.LINE_AA, _SHIFT)
    for loops, closed, colour in FEATURES:
        cv2.polylines(frame, [points[list(loop)] for loop in loops], closed, colour, thick,
                      cv2.LINE_AA, _SHIFT)
    for iris in (topology.RIGHT_IRIS, topology.LEFT_IRIS):
        centre = points[iris[0]]
        radius = np.linalg.norm(points[list(iris[1:])] - centre, axis=1).mean()
        cv2.circle(frame, tuple(int(v) for v in centre), int(radius), IRIS_COLOUR, thick,
                   cv2.LINE_AA, _SHIFT)
    return frame


@functools.cache
def _mesh_edges() -> np.ndarray:
    """(E, 2) unique edges of the mesh triangles."""
    triangles = topology.triangles()
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    return np.unique(np.sort(edges, axis=1), axis=0)

