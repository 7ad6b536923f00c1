"""Export the MediaPipe Face Mesh triangles into `retarget/face/data/triangles.npy`.

MediaPipe ships its mesh only as an edge set (FACEMESH_TESSELATION). The faces are the
3-cliques of that graph, minus the few cliques that are not faces (a clique whose edges are
all shared by two faces already is a "separating" triangle). Triangles are then wound so their
normals point out of the face in the canonical frame (z toward the camera).

Run once when the topology or the canonical face changes:
    python -m dimitra.backend.tracking.export_topology
"""

import collections
import itertools
from pathlib import Path

import numpy as np
from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

from ...retarget.face.canonical import load_canonical_face

OUT = Path(__file__).resolve().parents[2] / "retarget" / "face" / "data" / "triangles.npy"


def mesh_triangles(edges) -> np.ndarray:
    """(F, 3) int32 vertex triples of the faces of a triangulated edge graph."""
    edges = {tuple(sorted(e)) for e in edges}
    neighbours = collections.defaultdict(set)
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    cliques = {tuple(sorted((a, b, c))) for a, b in edges for c in neighbours[a] & neighbours[b]}
    faces_per_edge = collections.Counter(
        e for tri in cliques for e in itertools.combinations(tri, 2))
    # In a manifold mesh an edge borders at most two faces; a clique that sits on over-shared
    # edges is a hole-spanning triangle, not a face.
    faces = [t for t in cliques
             if sum(faces_per_edge[e] > 2 for e in itertools.combinations(t, 2)) < 2]
    return np.array(sorted(faces), dtype=np.int32)


def wind_outward(triangles: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Flip triangles whose normal points away from the camera (+z) in the canonical frame."""
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    facing_back = np.cross(b - a, c - a)[:, 2] < 0
    wound = triangles.copy()
    wound[facing_back] = wound[facing_back][:, [0, 2, 1]]
    return wound


def main() -> None:
    triangles = wind_outward(mesh_triangles(FACEMESH_TESSELATION), load_canonical_face())
    np.save(OUT, triangles)
    print(f"{len(triangles)} triangles -> {OUT}")


if __name__ == "__main__":
    main()
