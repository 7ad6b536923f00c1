"""One face tracked through a video with MediaPipe Face Mesh (478 points, video mode).

Video mode re-uses the previous frame's face region, so the expensive detector only runs when
the face is lost. When several faces are in the picture, the *main* face (the largest) is
chosen by a cheap face-detector audit every `audit_every` frames, and tracking then runs on a
crop around it, so the tracker cannot wander to a bystander.
"""

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Self

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ start-up chatter
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
from mediapipe.python.solutions import face_detection, face_mesh

from ...retarget.face.topology import NUM_LANDMARKS


@contextlib.contextmanager
def quiet_native_logs():
    """MediaPipe's C++ side (absl, TF Lite) writes start-up notes straight to file descriptor 2
    ("Created TensorFlow Lite XNNPACK delegate", "Feedback manager requires ..."), past GLOG
    settings and sys.stderr: send fd 2 to a temporary file while the block runs, and replay it
    only if the block fails, so a crash keeps its native diagnostics."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            os.write(2, captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class NoFaceError(ValueError):
    """An image in which no (or no single main) face could be found."""


@dataclass(frozen=True)
class Box:
    """Pixel box (x0, y0, x1, y1) in a frame."""
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)


class FaceTracker:
    """Feed frames in time order; `track` returns (478, 3) pixel-frame landmarks or None.

    Pixel frame: x right and y down in pixels of the frame *as given*, z MediaPipe's depth
    scaled by the frame width (same units as x).
    """

    def __init__(self, audit_every: int = 50, crop_margin: float = 0.6):
        with quiet_native_logs():
            self._mesh = face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1,
                                            refine_landmarks=True, min_detection_confidence=0.5,
                                            min_tracking_confidence=0.5)
            self._detector = face_detection.FaceDetection(model_selection=1,
                                                          min_detection_confidence=0.5)
        self.audit_every = audit_every
        self.crop_margin = crop_margin
        self._frame_index = 0
        self._crop: Box | None = None       # set while several faces share the picture
        self.max_faces_seen = 0

    def close(self) -> None:
        self._mesh.close()
        self._detector.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def track(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        """frame_rgb (H, W, 3) uint8 -> (478, 3) float32 landmarks in pixels, or None."""
        if self._frame_index == 0:         # the graphs' first run logs natively, once
            with quiet_native_logs():
                self._audit(frame_rgb)
                self._frame_index += 1
                return self._track(frame_rgb)
        if self._frame_index % self.audit_every == 0:
            self._audit(frame_rgb)
        self._frame_index += 1
        return self._track(frame_rgb)

    def _track(self, frame_rgb: np.ndarray) -> np.ndarray | None:
        if self._crop is None:
            return self._mesh_landmarks(frame_rgb)
        box = self._crop
        landmarks = self._mesh_landmarks(np.ascontiguousarray(frame_rgb[box.y0:box.y1, box.x0:box.x1]))
        if landmarks is None:
            return None
        landmarks[:, :2] += (box.x0, box.y0)
        self._crop = self._expand(_landmark_box(landmarks), frame_rgb.shape)  # follow the face
        return landmarks

    def _mesh_landmarks(self, image: np.ndarray) -> np.ndarray | None:
        result = self._mesh.process(image)
        if not result.multi_face_landmarks:
            return None
        height, width = image.shape[:2]
        return landmarks_to_pixels(result.multi_face_landmarks[0], width, height)

    def _audit(self, frame_rgb: np.ndarray) -> None:
        """Count faces; with more than one, pin tracking to a crop around the largest."""
        boxes = detect_face_boxes(self._detector, frame_rgb)
        self.max_faces_seen = max(self.max_faces_seen, len(boxes))
        if len(boxes) > 1:
            self._crop = self._expand(max(boxes, key=lambda b: b.area), frame_rgb.shape)
        elif len(boxes) == 1:
            self._crop = None

    def _expand(self, box: Box, shape) -> Box:
        height, width = shape[:2]
        pad_x = int((box.x1 - box.x0) * self.crop_margin)
        pad_y = int((box.y1 - box.y0) * self.crop_margin)
        return Box(max(0, box.x0 - pad_x), max(0, box.y0 - pad_y),
                   min(width, box.x1 + pad_x), min(height, box.y1 + pad_y))


def find_faces(image_rgb: np.ndarray, size: tuple[int, int] | None = None, max_faces: int = 4,
               min_detection_confidence: float = 0.3) -> list[np.ndarray]:
    """Every face Face Mesh finds in one still image (static mode: the detector always runs).

    Returns (478, 3) float32 pixel-frame landmarks per face, in pixels of `size` (width,
    height): the image's own by default, or the original's when `image_rgb` was resized for
    detection. Confidence 0.3 also finds stylised renders (Blender characters).
    """
    with quiet_native_logs(), face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_detection_confidence) as mesh:
        result = mesh.process(np.ascontiguousarray(image_rgb))
    width, height = size or (image_rgb.shape[1], image_rgb.shape[0])
    faces = result.multi_face_landmarks or []
    return [landmarks_to_pixels(face, width, height) for face in faces]


def landmarks_to_pixels(face, width: int, height: int) -> np.ndarray:
    """One MediaPipe face (normalised) -> (478, 3) float32 pixels: x·width, y·height, z·width."""
    points = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)
    if len(points) != NUM_LANDMARKS:
        raise RuntimeError(f"MediaPipe returned {len(points)} landmarks, expected 478")
    return points * np.array([width, height, width], dtype=np.float32)


def detect_face_boxes(detector, image_rgb: np.ndarray) -> list[Box]:
    """Pixel boxes of the faces MediaPipe's face detector finds in an image."""
    height, width = image_rgb.shape[:2]
    result = detector.process(image_rgb)
    boxes = []
    for detection in result.detections or []:
        rel = detection.location_data.relative_bounding_box
        boxes.append(Box(int(rel.xmin * width), int(rel.ymin * height),
                         int((rel.xmin + rel.width) * width), int((rel.ymin + rel.height) * height)))
    return boxes


def _landmark_box(landmarks: np.ndarray) -> Box:
    x0, y0 = landmarks[:, :2].min(0)
    x1, y1 = landmarks[:, :2].max(0)
    return Box(int(x0), int(y0), int(x1), int(y1))
