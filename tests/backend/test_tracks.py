"""Gap bridging, splitting and 25 fps resampling of tracked landmarks."""

import numpy as np

from dimitra.backend.dataset.tracks import clean_segments, resample_track, split_tracks


def track(frames: int, fps: float = 30.0, missing=()):
    times = np.arange(frames) / fps
    # Every coordinate follows the time, so interpolation errors are easy to see.
    landmarks = np.repeat(times[:, None, None], 478, 1).repeat(3, 2).astype(np.float32)
    landmarks[list(missing)] = np.nan
    return times, landmarks


def test_short_gaps_are_bridged_by_interpolation():
    times, landmarks = track(60, missing=range(10, 15))  # 5 frames: bridged
    [(t, points)] = split_tracks(times, landmarks)
    assert len(t) == 60 and np.isfinite(points).all()
    np.testing.assert_allclose(points[12, 0, 0], times[12], atol=1e-6)


def test_long_gaps_split_the_clip_and_edges_are_not_invented():
    times, landmarks = track(90, missing=[0, 1, *range(40, 46), 88, 89])  # 6-frame gap: split
    runs = split_tracks(times, landmarks)
    assert [len(t) for t, _ in runs] == [38, 42]
    assert runs[0][0][0] == times[2] and runs[1][0][-1] == times[87]


def test_resampling_follows_timestamps_of_variable_frame_rate_video():
    # Frames alternately 1/30 s and 2/30 s apart, like video-retalking's 1.mp4.
    steps = np.tile([1 / 30, 2 / 30], 30)
    times = np.concatenate([[0.0], np.cumsum(steps)])
    landmarks = np.repeat(times[:, None, None], 478, 1).repeat(3, 2)
    segment = resample_track(times, landmarks, fps=25.0)
    np.testing.assert_allclose(np.diff(segment.times_s), 1 / 25)
    np.testing.assert_allclose(segment.landmarks[:, 0, 0], segment.times_s, atol=1e-5)
    assert segment.times_s[-1] <= times[-1] + 1e-9


def test_pieces_shorter_than_half_a_second_are_dropped():
    times, landmarks = track(120, missing=range(12, 40))
    segments = clean_segments(times, landmarks)
    assert [len(s.times_s) for s in segments] == [66]  # 12-frame piece (0.4 s) dropped
