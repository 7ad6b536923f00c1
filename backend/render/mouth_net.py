"""What a warp cannot make: the inside of the mouth, painted by a small network (onnxruntime).

A warp only stretches the reference's lips apart, so an opening mouth shows smeared lip
colour where teeth and the dark of the mouth should be. A square patch around the driving
mouth (fixed side per take, following the lips' centre) goes through a small U-Net that sees
the warped patch, the reference's own mouth patch (its lips and, when they show, its teeth)
and the driving inner and outer lip outlines, and returns the patch repainted; its change to
the warp is laid back over the frame with feathered edges, so there is no seam. The same
numpy code builds the network's inputs here and in training (train.py), so the two cannot
drift apart.
"""

import functools
from pathlib import Path

import cv2
import numpy as np

from ...retarget.face import topology

PATCH = 96                    # network input side, pixels
PATCH_PER_MOUTH_WIDTH = 2.2   # patch side / reference mouth width (corners 61-291)
INPUT_CHANNELS = 8            # warped RGB, reference RGB, inner-lip mask, outer-lip mask
WEIGHTS = Path(__file__).resolve().parent / "weights" / "mouth_net.onnx"
_FEATHER = 0.2                # share of the patch side over which the repaint fades out


class MouthPatch:
    """The mouth patch's geometry for one take (all coordinates crop pixels)."""

    def __init__(self, reference_crop_px: np.ndarray):
        corners = reference_crop_px[[61, 291], :2]
        self.side = PATCH_PER_MOUTH_WIDTH * float(np.linalg.norm(corners[1] - corners[0]))

    def to_patch(self, landmarks_crop_px: np.ndarray) -> np.ndarray:
        """(2, 3) affine taking crop pixels to this frame's patch pixels (PATCH wide)."""
        centre = landmarks_crop_px[list(topology.LIPS_OUTER), :2].mean(axis=0)
        scale = PATCH / self.side
        return np.array([[scale, 0.0, PATCH / 2 - scale * centre[0]],
                         [0.0, scale, PATCH / 2 - scale * centre[1]]])

    def cut(self, frame: np.ndarray, to_patch: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 frame -> (PATCH, PATCH, 3) uint8."""
        return cv2.warpAffine(frame, to_patch, (PATCH, PATCH), flags=cv2.INTER_AREA
                              if to_patch[0, 0] < 1 else cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)


def lip_masks(landmarks_crop_px: np.ndarray, to_patch: np.ndarray) -> np.ndarray:
    """(2, PATCH, PATCH) float32 in [0, 1]: the inner and the outer lip outline, filled."""
    points = landmarks_crop_px[:, :2] @ to_patch[:, :2].T + to_patch[:, 2]
    masks = np.zeros((2, PATCH, PATCH), np.uint8)
    for channel, loop in enumerate((topology.LIPS_INNER, topology.LIPS_OUTER)):
        fixed = np.round(points[list(loop)] * 16).astype(np.int32)
        cv2.fillPoly(masks[channel], [fixed], 255, cv2.LINE_AA, 4)
    return masks.astype(np.float32) / 255.0


def network_inputs(warped_patch: np.ndarray, reference_patch: np.ndarray,
                   masks: np.ndarray) -> np.ndarray:
    """(INPUT_CHANNELS, PATCH, PATCH) float32 in [0, 1]: patches (PATCH, PATCH, 3) uint8, masks
    (2, PATCH, PATCH) float32. The warped patch comes first: the network adds to it."""
    return np.concatenate([np.moveaxis(warped_patch, 2, 0).astype(np.float32) / 255.0,
                           np.moveaxis(reference_patch, 2, 0).astype(np.float32) / 255.0,
                           masks], axis=0)


@functools.cache
def feather() -> np.ndarray:
    """(PATCH, PATCH) float32 weight of the repaint: 1 inside, a cosine fall to 0 at the edges."""
    ramp = np.clip(np.minimum(np.arange(PATCH) + 0.5, PATCH - np.arange(PATCH) - 0.5)
                   / (_FEATHER * PATCH), 0.0, 1.0)
    ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


def paste(frame: np.ndarray, change: np.ndarray, to_patch: np.ndarray) -> np.ndarray:
    """Add the network's change to the warped patch, (PATCH, PATCH, 3) float32 in [-1, 1], to
    frame (S, S, 3) uint8 with feathered edges. Only the change is resampled, so where the
    network changes nothing the frame keeps the warp's full resolution."""
    from_patch = cv2.invertAffineTransform(to_patch)
    corners = np.array([[0, 0, 1], [PATCH, PATCH, 1]], np.float64) @ from_patch.T   # (2, 2)
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, None)
    x1 = min(frame.shape[1], int(np.ceil(corners[:, 0].max())))
    y1 = min(frame.shape[0], int(np.ceil(corners[:, 1].max())))
    if x1 <= x0 or y1 <= y0:
        return frame
    from_patch[:, 2] -= (x0, y0)     # only the patch's box of the frame is touched
    weighted = change * (255.0 * feather())[..., None]
    added = cv2.warpAffine(weighted, from_patch, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(frame[y0:y1, x0:x1] + added + 0.5, 0, 255).astype(np.uint8)
    return out


class MouthNet:
    """The exported network, run by onnxruntime (no torch)."""

    def __init__(self, path: str | Path = WEIGHTS, threads: int = 2):
        import onnxruntime

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the renderer's mouth network is missing; reinstall "
                                    "Dimitra, or render with --warp-only")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(path), options,
                                                     providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """(INPUT_CHANNELS, PATCH, PATCH) float32 -> (PATCH, PATCH, 3) float32 in [0, 1]."""
        (out,) = self._session.run(None, {self._input: inputs[None]})
        return np.moveaxis(np.clip(out[0], 0.0, 1.0), 0, 2)
