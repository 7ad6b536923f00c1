"""Landmark points on a rig's surface: from ray hits, from a canonical-face fit, saved and reused."""

import numpy as np
import pytest

from dimitra.retarget.correspond import (
    fit_canonical,
    from_hits,
    from_vertices,
    load_correspondence,
    save_correspondence,
)
from dimitra.retarget.rig import RigDescription, RigError, ShapeKey
from dimitra.retarget.rotations import axis_angle_to_matrix
from dimitra.retarget.sample_face import INTER_OCULAR_M, build_sample_face


@pytest.fixture(scope="module")
def face():
    return build_sample_face().rig


def moved(rig: RigDescription, rotation: np.ndarray, scale: float) -> RigDescription:
    """The same rig in another scene: turned, scaled and shifted."""
    keys = [ShapeKey(k.name, scale * k.deltas @ rotation.T) for k in rig.shape_keys]
    return RigDescription(scale * rig.vertices @ rotation.T + [3.0, -1.0, 2.0], rig.triangles,
                          keys)


def test_hits_on_the_surface_give_those_points(face):
    rng = np.random.default_rng(0)
    triangles = rng.integers(0, 852, 478)
    weights = rng.dirichlet(np.ones(3), 478)
    hits = np.einsum("nc,ncd->nd", weights, face.vertices[face.triangles[triangles]])
    triangles[:5] = -1                      # rays that missed the mesh
    correspondence = from_hits(face, triangles, hits)
    points = correspondence.points(face)
    assert np.allclose(points[5:], hits[5:])
    assert not correspondence.valid[:5].any() and np.all(points[:5] == 0)


@pytest.mark.parametrize("scale", [0.01, 1.0, 10.0])
def test_canonical_fit_finds_the_face_in_any_units_and_axes(face, scale):
    # The face looks along +X and Y is up (a Y-up export), in the given units.
    rotation = axis_angle_to_matrix(np.array([1.0, 0, 0]), -np.pi / 2) @ \
        axis_angle_to_matrix(np.array([0.0, 0, 1]), np.pi / 2)
    rig = moved(face, rotation, scale)
    forward, up = rotation @ [0.0, 1, 0], rotation @ [0.0, 0, 1]
    correspondence, _ = fit_canonical(rig, forward, up)
    error = np.linalg.norm(correspondence.points(rig)[:468] - rig.vertices[:468], axis=1)
    assert np.median(error) / (scale * INTER_OCULAR_M) < 0.02
    assert np.percentile(error, 95) / (scale * INTER_OCULAR_M) < 0.06


def test_picked_points_fix_a_wrong_guess(face):
    picked = {i: face.vertices[i] for i in (33, 263, 1, 152, 61, 291)}
    wrong_forward = np.array([1.0, 0.3, 0])    # the camera guess is 90° off
    correspondence, _ = fit_canonical(face, wrong_forward, np.array([0.0, 0, 1]), picked=picked)
    error = np.linalg.norm(correspondence.points(face)[:468] - face.vertices[:468], axis=1)
    assert np.median(error) / INTER_OCULAR_M < 0.02
    assert correspondence.method == "picked"


def test_saved_correspondence_is_reused_and_checked(face, tmp_path):
    correspondence = from_vertices(face, np.arange(478))
    path = save_correspondence(tmp_path / "hero.corr.npz", correspondence)
    again = load_correspondence(path)
    assert np.allclose(again.points(face), face.vertices[:478])
    other = RigDescription(face.vertices[:478], face.triangles[:852])
    with pytest.raises(RigError, match="make the correspondence again"):
        again.points(other)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(RigError, match="junk.npz"):
        load_correspondence(tmp_path / "junk.npz")
