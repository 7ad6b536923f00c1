"""The video frames of a prepared dataset clip, one per clip frame (25 fps), in the pixel frame
its landmarks were tracked in (the decoder's frames of at most 720 px a side, as `prepare`)."""

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..media.video import iter_frames

TRACKED_MAX_SIDE = 720   # backend.dataset.prepare tracks iter_frames' default size


def clip_frames(video: str | Path, start_s: float, fps: float, count: int
                ) -> Iterator[np.ndarray]:
    """Yield `count` RGB frames (H, W, 3) uint8: for clip frame t the decoded frame nearest in
    time to start_s + t / fps (stream clock). Streams: two frames held at a time."""
    wanted = 0
    previous = None
    for time_s, image in iter_frames(video, max_side=TRACKED_MAX_SIDE):
        while wanted < count:
            target = start_s + wanted / fps
            if time_s < target:
                break
            if previous is not None and target - previous[0] < time_s - target:
                yield previous[1]
            else:
                yield image
            wanted += 1
        if wanted >= count:
            return
        previous = (time_s, image)
    while wanted < count and previous is not None:   # the stream ended early: hold the last
        yield previous[1]
        wanted += 1


def clip_video(dataset: str | Path, recorded: str) -> Path:
    """The video an index entry names: its `video` path was written as `prepare` was given it
    (relative to where it ran), so it is looked for there, beside the dataset and above it."""
    dataset = Path(dataset).resolve()
    recorded_path = Path(recorded)
    for base in (Path.cwd(), dataset, dataset.parent, dataset.parent.parent):
        candidate = base / recorded_path
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{recorded}: the clip's video is not found from {dataset}; run "
                            "from the folder `dimitra prepare` ran in")
