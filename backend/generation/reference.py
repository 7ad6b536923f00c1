"""The reference face for generation: one still face, in the pixel frame of its picture.

Generated motion is expressed around it: motion-file landmarks are in the reference's pixel
frame, and motion-file pose is relative to its head pose. It comes from a picture (a photo or
a render of the character, found with MediaPipe Face Mesh in static mode) or from a motion
file / prepared dataset clip (its `neutral` shape, else its first frame).

A picture's landmarks are kept in the Dimitra cache, keyed by its decoded pixels: a pipeline
that animates line after line of one character finds them there from the second line on,
without importing MediaPipe (and OpenCV), about half a second of every `dimitra animate`.
"""

import hashlib
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ...retarget.atomic_file import atomic_open
from ...retarget.face import topology
from ...retarget.face.canonical import load_canonical_face
from ...retarget.face.pose import PIXEL_FROM_UPRIGHT, Similarity, fit_head_pose, to_canonical
from ...retarget.motion_file import Motion, MotionFileError, load_motion

IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")  # the JPEG opener also takes phone MPOs
MAX_PIXELS = 40_000_000     # refused from the header, before anything is decoded
DETECT_MAX_SIDE = 2048      # larger pictures are scaled down for detection
UPSCALE_SIDE = 512          # a small picture, or a crop round a small face, is retried this big
MAIN_FACE_RATIO = 2.0       # the largest face is the main one if its area is twice the next's
ALPHA_BACKGROUND = (128, 128, 128)


class ReferenceFaceError(ValueError):
    """A reference that cannot be used; the message names the input and says what to do."""


@dataclass
class Reference:
    landmarks_px: np.ndarray        # (478, 3) float32, pixel frame of the picture (z: depth·width)
    head_pose: Similarity           # canonical -> pixel frame
    canonical: np.ndarray           # (478, 3) float32, canonical frame, inter-ocular units
    image: np.ndarray | None        # (H, W, 3) uint8 RGB; None for a motion file
    image_size: tuple[int, int]     # (width, height) of the pixel frame
    source: str


def load_reference(source: str | os.PathLike | bytes, max_side: int = 4096,
                   min_face_px: int = 48) -> Reference:
    """A picture (JPEG, PNG, WebP, BMP; path or bytes) or a motion file (.npz) -> Reference.

    Pictures larger than `max_side` pixels (or 40 megapixels) are refused unread. A face under
    `min_face_px` across is found again in an upscaled crop around it. Raises
    ReferenceFaceError for anything unusable.
    """
    name, path, data = _open_source(source)
    label = os.fspath(path) if path is not None else f"{len(data)} bytes"
    is_zip = (data[:4] if path is None else _first_bytes(path, 4)) == b"PK\x03\x04"
    if is_zip or (path is not None and path.suffix.lower() == ".npz"):
        landmarks, image_size = _motion_face(_load_motion_source(name, path, data), name)
        return _make_reference(landmarks, None, image_size, label)
    image = _decode_image(io.BytesIO(data) if path is None else path, name, max_side)
    height, width = image.shape[:2]
    cached = _landmark_cache_path(image, min_face_px)
    try:
        landmarks = np.load(cached)
    except (OSError, ValueError):   # not there yet (or unreadable): detect, and keep them
        landmarks = _detect_main_face(image, name, min_face_px)
        try:
            with atomic_open(cached) as out:
                np.save(out, landmarks)
        except OSError:
            pass   # a read-only cache only costs the next call the detection again
    return _make_reference(landmarks, image, (width, height), label)


def _landmark_cache_path(image: np.ndarray, min_face_px: int) -> Path:
    """Where a picture's landmarks are cached: keyed by its pixels, the detection settings
    and the MediaPipe release (a newer one may place the points differently)."""
    from ..model.onnx_denoiser import cache_dir

    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes())
    digest.update(f"|{image.shape}|{min_face_px}|{DETECT_MAX_SIDE}|{UPSCALE_SIDE}|"
                  f"{metadata.version('mediapipe')}".encode())
    return cache_dir() / "reference" / f"{digest.hexdigest()[:32]}.npy"


def _open_source(source) -> tuple[str, Path | None, bytes | None]:
    """(how messages name the input, its path if given one, its bytes if given bytes)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = f"the reference data ({len(data)} bytes)"
        if not data:
            raise ReferenceFaceError(f"{name} is empty; send the bytes of a picture of the face.")
        return name, None, data
    path = Path(source)
    name = f"'{os.fspath(source)}'"
    if path.is_dir():
        raise ReferenceFaceError(f"{name} is a folder; pass a picture of the face or a .npz file.")
    if not path.is_file():
        raise ReferenceFaceError(f"{name} does not exist; check the path.")
    if path.stat().st_size == 0:
        raise ReferenceFaceError(f"{name} is empty (0 bytes); save the picture again.")
    return name, path, None


def _first_bytes(path: Path, count: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(count)


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------

def _decode_image(file, name: str, max_side: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright (EXIF orientation applied), alpha laid over grey."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file, formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ReferenceFaceError(f"{name} declares an image of over {MAX_PIXELS // 10**6} "
                                 "megapixels; scale it down before using it.") from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ReferenceFaceError(f"{name} is not a readable picture ({', '.join(IMAGE_FORMATS)}) "
                                 "or motion file (.npz); check the file or save it again as "
                                 "PNG or JPEG.") from error
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS or max(width, height) > max_side:
            raise ReferenceFaceError(f"{name} is {width}×{height} pixels, over the limit of "
                                     f"{max_side} px a side and {MAX_PIXELS // 10**6} megapixels; "
                                     f"scale it down to at most {max_side} px.")
        try:
            rgb = _to_rgb(ImageOps.exif_transpose(image))
        except Exception as error:  # PIL's decoders raise many types on damaged data
            raise ReferenceFaceError(f"{name} could not be decoded ({error}); it may be truncated "
                                     "or damaged. Save the picture again.") from error
    return np.asarray(rgb, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith(("I", "F")):  # 16-bit or float grey: PIL's convert would clip
        grey = np.asarray(image, dtype=np.float64)
        grey = grey / 257.0 if grey.max() > 255 else grey
        image = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    if "A" in image.mode or "transparency" in image.info:
        # Transparent renders: whatever colour hides under alpha 0 must not reach the detector.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _detect_main_face(image: np.ndarray, name: str, min_face_px: int) -> np.ndarray:
    """(478, 3) float32 landmarks of the one main face, in the picture's pixels."""
    from ..tracking.face_tracker import find_faces

    height, width = image.shape[:2]
    longest = max(width, height)
    # Landmarks come back normalised, so `size` puts them in the original's pixels.
    faces = find_faces(_resized(image, DETECT_MAX_SIDE) if longest > DETECT_MAX_SIDE else image,
                       size=(width, height))
    if not faces and longest < UPSCALE_SIDE:
        faces = find_faces(_resized(image, UPSCALE_SIDE), size=(width, height))
    if not faces:
        raise ReferenceFaceError(f"{name}: no face found. Use a frontal, well-lit picture of the "
                                 f"face, at least {min_face_px} px across, or pass a prepared "
                                 "neutral face as a .npz motion file.")
    faces.sort(key=_face_area, reverse=True)
    if len(faces) > 1 and _face_area(faces[0]) < MAIN_FACE_RATIO * _face_area(faces[1]):
        count = f"{len(faces)} or more" if len(faces) == 4 else str(len(faces))
        raise ReferenceFaceError(f"found {count} faces of similar size in {name}; crop the "
                                 "picture to the one face to animate.")
    if _face_size(faces[0]) < min_face_px:
        return _find_small_face_again(image, faces[0], name, min_face_px)
    return faces[0]


def _find_small_face_again(image: np.ndarray, face: np.ndarray, name: str,
                           min_face_px: int) -> np.ndarray:
    """A small face tracked again in an upscaled crop around it, where the mesh has pixels."""
    height, width = image.shape[:2]
    mesh = face[:topology.NUM_MESH_LANDMARKS, :2]
    low, high = mesh.min(0), mesh.max(0)
    pad = 0.5 * (high - low).max()
    x0, y0 = np.maximum(np.floor(low - pad), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(high + pad), (width, height)).astype(int)
    from ..tracking.face_tracker import find_faces

    found = find_faces(_resized(image[y0:y1, x0:x1], UPSCALE_SIDE), size=(x1 - x0, y1 - y0))
    if not found:
        raise ReferenceFaceError(f"{name}: the face is only {_face_size(face):.0f} px across, "
                                 f"too small to track reliably (at least {min_face_px} px); use "
                                 "a larger or closer picture of the face.")
    again = _largest(found)
    again[:, :2] += (x0, y0)
    return again


def _resized(image: np.ndarray, longest: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = longest / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    import cv2

    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def _largest(faces: list[np.ndarray]) -> np.ndarray:
    return max(faces, key=_face_area)


def _face_extent(face: np.ndarray) -> np.ndarray:
    mesh = face[:topology.NUM_MESH_LANDMARKS, :2]
    return mesh.max(0) - mesh.min(0)


def _face_area(face: np.ndarray) -> float:
    return float(np.prod(_face_extent(face)))


def _face_size(face: np.ndarray) -> float:
    """Pixels across the face, whichever way it is turned."""
    return float(_face_extent(face).max())


# ---------------------------------------------------------------------------------------------
# Motion files
# ---------------------------------------------------------------------------------------------

def _load_motion_source(name: str, path: Path | None, data: bytes | None) -> Motion:
    if path is not None:
        try:
            return load_motion(path)
        except MotionFileError as error:
            raise ReferenceFaceError(f"{error}; pass a picture of the face or a motion file "
                                     "written by dimitra.") from error
    with tempfile.TemporaryDirectory() as folder:  # load_motion reads files: one motion reader
        spill = Path(folder) / "reference.npz"
        spill.write_bytes(data)
        try:
            return load_motion(spill)
        except MotionFileError as error:
            message = str(error).replace(str(spill), name)
            raise ReferenceFaceError(f"{message}; send a picture of the face or a motion file "
                                     "written by dimitra.") from error


def _motion_face(motion: Motion, name: str) -> tuple[np.ndarray, tuple[int, int]]:
    """(478, 3) pixel-frame landmarks: the clip's neutral shape put where its first frame is."""
    first = np.asarray(motion.landmarks[0], dtype=np.float64)
    neutral = motion.extras.get("neutral")
    if neutral is None:
        landmarks = first
    else:
        if neutral.shape != (topology.NUM_LANDMARKS, 3):
            raise ReferenceFaceError(f"{name}: its 'neutral' must be (478, 3), got "
                                     f"{neutral.shape}; re-run dimitra prepare on the clip.")
        landmarks = _first_head_pose(motion, first).apply(np.asarray(neutral, dtype=np.float64))
    if not np.isfinite(landmarks).all():
        raise ReferenceFaceError(f"{name}: its first frame has no face (values are not finite); "
                                 "pass a clip whose face is tracked from the start.")
    size = motion.meta.get("image_size")  # (width, height), when the writer recorded it
    if not (isinstance(size, list) and len(size) == 2 and min(size) > 0):
        size = frame_size_around(landmarks)
    return landmarks.astype(np.float32), (int(size[0]), int(size[1]))


def _first_head_pose(motion: Motion, first: np.ndarray) -> Similarity:
    """Frame 0's canonical -> pixel transform: the clip's head-pose extras, else fitted."""
    extras, count = motion.extras, motion.frame_count
    shapes = {"head_scale": (count,), "head_rotation": (count, 3, 3),
              "head_translation": (count, 3)}
    if all(extras.get(key, np.empty(0)).shape == shape for key, shape in shapes.items()):
        return Similarity(np.asarray(extras["head_scale"][0], dtype=np.float64),
                          PIXEL_FROM_UPRIGHT @ extras["head_rotation"][0],  # stored upright
                          np.asarray(extras["head_translation"][0], dtype=np.float64))
    return fit_head_pose(first, load_canonical_face())


def _make_reference(landmarks: np.ndarray, image: np.ndarray | None, image_size: tuple[int, int],
                    source: str) -> Reference:
    landmarks = np.asarray(landmarks, dtype=np.float32)
    head_pose = fit_head_pose(landmarks.astype(np.float64), load_canonical_face())
    canonical = to_canonical(landmarks.astype(np.float64), head_pose).astype(np.float32)
    return Reference(landmarks, head_pose, canonical, image, image_size, source)


def frame_size_around(landmarks: np.ndarray) -> tuple[int, int]:
    """(width, height) of a frame holding (..., 478, 3) pixel-frame landmarks, for when no
    picture says: the margin left and above the face is mirrored right and below it."""
    points = np.asarray(landmarks)[..., :2].reshape(-1, 2)
    low, high = np.maximum(np.nanmin(points, 0), 0), np.nanmax(points, 0)
    size = np.ceil(np.maximum(high + low, high + 1))
    return int(size[0]), int(size[1])
