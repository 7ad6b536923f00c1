"""The reference face: a picture or a motion file in, one face in its pixel frame out."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from dimitra.backend.demo import REFERENCE_IMAGE
from dimitra.backend.generation.reference import ReferenceFaceError, load_reference
from dimitra.backend.tracking.face_tracker import FaceTracker
from dimitra.retarget.face import topology
from dimitra.retarget.face.canonical import inter_ocular_distance, load_canonical_face
from dimitra.retarget.face.pose import head_rotation
from dimitra.retarget.motion_file import Motion, save_motion


@pytest.fixture(scope="module")
def sample():
    return load_reference(REFERENCE_IMAGE)


@pytest.fixture(scope="module")
def sample_image() -> np.ndarray:
    return np.asarray(Image.open(REFERENCE_IMAGE).convert("RGB"))


def encoded(image: np.ndarray | Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format)
    return buffer.getvalue()


def mean_error(a: np.ndarray, b: np.ndarray) -> float:
    """Mean 2D distance of two (478, 3) landmark sets, in inter-ocular units of `b`."""
    return float(np.linalg.norm(a[:, :2] - b[:, :2], axis=1).mean() / inter_ocular_distance(b))


def test_the_sample_photo_gives_the_canonical_shape_on_the_face(sample, sample_image):
    assert sample.landmarks_px.shape == (478, 3) and sample.landmarks_px.dtype == np.float32
    assert sample.image_size == (384, 384) and sample.image.shape == (384, 384, 3)
    assert sample.source == str(REFERENCE_IMAGE)
    canonical_face = load_canonical_face()
    assert np.linalg.norm(sample.canonical - canonical_face, axis=1).mean() < 0.1
    # Same pixel frame (z included) as the video tracker finds on the same picture.
    with FaceTracker() as tracker:
        tracked = tracker.track(sample_image)
    assert np.abs(sample.landmarks_px - tracked).mean() < 2.0
    # The head pose maps the canonical shape back onto the landmarks.
    assert np.abs(sample.head_pose.apply(sample.canonical) - sample.landmarks_px).max() < 1e-3
    # Eyes are darker than the cheeks below them: the points lie on this face.
    eyes = sample.landmarks_px[[468, 473], :2].round().astype(int)
    cheeks = sample.landmarks_px[[205, 425], :2].round().astype(int)
    grey = sample_image.mean(-1)
    assert grey[eyes[:, 1], eyes[:, 0]].max() < grey[cheeks[:, 1], cheeks[:, 0]].min()


def test_bytes_alpha_and_grey_pictures_give_the_same_face(sample, sample_image):
    from_bytes = load_reference(REFERENCE_IMAGE.read_bytes())
    np.testing.assert_allclose(from_bytes.landmarks_px, sample.landmarks_px, atol=1e-3)
    assert "bytes" in from_bytes.source

    rgba = np.dstack([sample_image, np.full((384, 384), 255, np.uint8)])
    rgba[:, :40, 3] = 0  # a transparent strip, as renders with a transparent film have
    with_alpha = load_reference(encoded(rgba))
    assert with_alpha.image.shape == (384, 384, 3)
    assert (with_alpha.image[:, :40] == 128).all()
    assert mean_error(with_alpha.landmarks_px, sample.landmarks_px) < 0.03

    grey = load_reference(encoded(Image.fromarray(sample_image).convert("L")))
    assert grey.image.shape == (384, 384, 3)
    assert mean_error(grey.landmarks_px, sample.landmarks_px) < 0.05


def test_tiny_and_huge_pictures_give_landmarks_in_their_own_pixels(sample, sample_image):
    tiny = encoded(Image.fromarray(sample_image).resize((96, 96), Image.Resampling.LANCZOS))
    small = load_reference(tiny)  # the face is ~37 px across: found again at 512 px
    assert small.image_size == (96, 96)
    assert mean_error(small.landmarks_px * 4, sample.landmarks_px) < 0.05

    huge = Image.fromarray(sample_image).resize((3000, 3000), Image.Resampling.BICUBIC)
    large = load_reference(encoded(huge, "JPEG"))  # detected at 2048 px
    assert large.image_size == (3000, 3000)
    ratio = large.head_pose.scale / sample.head_pose.scale
    assert abs(ratio / (3000 / 384) - 1) < 0.02
    assert mean_error(large.landmarks_px * (384 / 3000), sample.landmarks_px) < 0.03


def test_two_equal_faces_are_refused_and_a_clear_main_face_is_chosen(sample, sample_image):
    with pytest.raises(ReferenceFaceError, match="found 2 faces.*crop"):
        load_reference(encoded(np.concatenate([sample_image, sample_image], axis=1)))

    canvas = np.full((384, 576, 3), 128, np.uint8)
    canvas[:, :384] = sample_image
    canvas[96:288, 384:] = np.asarray(Image.fromarray(sample_image).resize((192, 192)))
    chosen = load_reference(encoded(canvas))
    assert mean_error(chosen.landmarks_px, sample.landmarks_px) < 0.03


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width × height pixels (nothing to decode behind it)."""
    data = bytearray(encoded(np.zeros((8, 8, 3), np.uint8)))
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    return bytes(data)


UNUSABLE = [
    ("blank.png", encoded(np.full((384, 384, 3), 128, np.uint8)), "no face found"),
    ("noise.png", encoded(np.random.default_rng(0).integers(0, 256, (384, 384, 3), np.uint8)),
     "no face found"),
    ("garbage.jpg", np.random.default_rng(1).bytes(5000), "not a readable picture"),
    ("empty.png", b"", "empty"),
    ("bomb.png", png_declaring(20_000, 20_000), "megapixels"),
    ("large.png", png_declaring(5000, 5000), "5000×5000 pixels"),
    ("truncated.jpg", (REFERENCE_IMAGE.read_bytes()[:3000]), "truncated"),
    ("not_motion.npz", encoded(np.zeros((4, 4, 3), np.uint8)), "not a readable|motion file"),
]


@pytest.mark.parametrize("name, content, message",
                         [pytest.param(*case, id=case[0]) for case in UNUSABLE])
def test_unusable_pictures_get_clear_errors_naming_them(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ReferenceFaceError, match=message) as error:
        load_reference(path)
    assert name in str(error.value)
    if content:
        with pytest.raises(ReferenceFaceError, match=f"{len(content)} bytes"):
            load_reference(content)


def test_a_prepared_clip_gives_its_neutral_face_where_its_first_frame_is(sample, tmp_path):
    pose = sample.head_pose
    frames = np.repeat(sample.landmarks_px[None], 3, axis=0)
    frames[0, list(topology.LIPS_INNER[1:10]), 1] += 8  # frame 0 speaks: not the neutral face
    clip = Motion(frames, np.zeros((3, 6), np.float32), 25.0, {"clip_id": "sample"},
                  {"neutral": sample.canonical,
                   "head_scale": np.repeat(pose.scale, 3),
                   "head_rotation": np.repeat(head_rotation(pose)[None], 3, axis=0),
                   "head_translation": np.repeat(pose.translation[None], 3, axis=0)})
    path = save_motion(tmp_path / "clip.npz", clip)
    reference = load_reference(path)
    np.testing.assert_allclose(reference.landmarks_px, sample.landmarks_px, atol=0.01)
    np.testing.assert_allclose(reference.canonical, sample.canonical, atol=1e-4)
    assert reference.image is None
    width, height = reference.image_size
    assert sample.landmarks_px[:, 0].max() < width <= 400
    assert sample.landmarks_px[:, 1].max() < height <= 400
    assert np.allclose(load_reference(path.read_bytes()).landmarks_px, reference.landmarks_px)

    # Without a neutral shape, the first frame is the face.
    del clip.extras["neutral"]
    first = load_reference(save_motion(tmp_path / "plain.npz", clip))
    np.testing.assert_allclose(first.landmarks_px, frames[0], atol=1e-4)
