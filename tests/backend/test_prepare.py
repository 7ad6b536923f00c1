"""`dimitra prepare`: real video in, clean 25 fps training clips out; bad clips never stop a run."""

import shutil

import numpy as np
import pytest

from dimitra.backend.dataset.index import load_features, load_index
from dimitra.backend.dataset.prepare import run_prepare
from dimitra.backend.media.video import iter_frames, write_video
from dimitra.retarget.face.measures import inner_lip_gap
from dimitra.retarget.motion_file import load_motion
from tests.conftest import TALKING_FACES, shared_file


@pytest.fixture(scope="module")
def prepared(talking_clip, tmp_path_factory):
    video, truth = talking_clip
    dataset = tmp_path_factory.mktemp("dataset")
    [record] = run_prepare([video], dataset, jobs=1, progress=False)
    return dataset, record, truth


def test_a_talking_clip_becomes_a_25fps_segment_with_audio_and_features(prepared):
    dataset, record, _ = prepared
    assert record.status == "ok", record.error
    assert record.coverage >= 0.98
    [segment] = record.segments
    motion = load_motion(dataset / segment.file)
    assert motion.fps == 25 and motion.landmarks.shape == (segment.frames, 478, 3)
    assert abs(segment.frames - 75) <= 1
    assert motion.extras["audio"].shape == (segment.frames * 640,)
    assert np.abs(motion.extras["audio"]).max() > 0.1  # the speech is there, normalised
    assert load_features(dataset, segment, "whisper-tiny-en").shape == (segment.frames, 384)
    assert np.isfinite(motion.extras["canonical"]).all()


def test_the_motion_put_into_the_clip_comes_back_out(prepared):
    dataset, record, truth = prepared
    motion = load_motion(dataset / record.segments[0].file)
    n = motion.frame_count
    roll = truth["roll"][:n] - truth["roll"][0]
    assert np.degrees(np.abs(motion.pose[:, 2] - roll)).max() < 1.5
    assert np.degrees(np.abs(motion.pose[:, :2])).max() < 3.0  # no pitch or yaw was applied
    gap = inner_lip_gap(motion.extras["canonical"])
    assert np.corrcoef(gap, truth["opening"][:n])[0, 1] > 0.8


def test_a_rerun_skips_clips_already_done(prepared, talking_clip):
    dataset, record, _ = prepared
    path = dataset / record.segments[0].file
    before = path.stat().st_mtime_ns
    [again] = run_prepare([talking_clip[0]], dataset, jobs=1, progress=False)
    assert again.content_hash == record.content_hash
    assert path.stat().st_mtime_ns == before


def test_a_rerun_refreshes_stale_features_and_the_manifest_fields(talking_clip, tmp_path, monkeypatch):
    from dimitra.backend.features.speech_features import LogMelFeatures

    video = tmp_path / "clip.mp4"
    shutil.copy(talking_clip[0], video)
    manifest = tmp_path / "manifest.csv"
    row = "clip_id,video_path,audio_path,split,speaker_label,language\nclip,clip.mp4,clip.mp4,{},S1,{}\n"
    manifest.write_text(row.format("train", "en"))
    dataset = tmp_path / "dataset"
    [first] = run_prepare([manifest], dataset, jobs=1, features=("log-mel",), progress=False)
    old_path = first.segments[0].features["log-mel"]
    assert first.language == "en"

    monkeypatch.setattr(LogMelFeatures, "revision", 2)   # its computation changed
    manifest.write_text(row.format("dev", "de"))
    [again] = run_prepare([manifest], dataset, jobs=1, features=("log-mel",), progress=False)
    [clip] = load_index(dataset)
    assert again.content_hash == first.content_hash      # the tracking was not redone
    assert clip.split == "dev" and clip.language == "de"
    new_path = clip.segments[0].features["log-mel"]
    assert new_path != old_path and (dataset / new_path).is_file()
    assert load_features(dataset, clip.segments[0], "log-mel").shape == (clip.segments[0].frames, 320)


def test_bad_clips_fail_alone_with_clear_errors_and_leave_nothing(talking_clip, tmp_path):
    good = tmp_path / "good.mp4"
    shutil.copy(talking_clip[0], good)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(50_000))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    frames = [frame for _, frame in iter_frames(good)]
    silent = write_video(tmp_path / "silent.mp4", frames[:30], 25)  # no audio, no side file
    no_face = write_video(tmp_path / "noface.mp4", [np.full((128, 128, 3), 90, np.uint8)] * 30,
                          25, np.zeros(16_000 * 2, np.float32))
    dataset = tmp_path / "dataset"
    records = run_prepare([good, corrupt, empty, truncated, silent, no_face], dataset, jobs=2,
                          progress=False)
    status = {r.clip_id: r for r in records}
    assert status["good"].status == "ok"
    for name in ("corrupt", "empty", "truncated", "silent", "noface"):
        assert status[name].status == "failed", name
        assert f"{name}.mp4" in status[name].error
    assert "no audio" in status["silent"].error
    assert "no face" in status["noface"].error
    written = sorted(p.name for p in (dataset / "clips").iterdir())
    assert written == ["good.npz"]
    assert {c.clip_id for c in load_index(dataset)} == set(status)


def test_a_same_stem_audio_file_is_used_when_the_video_is_silent(talking_clip, tmp_path):
    from dimitra.backend.media.audio import load_audio, write_wav_atomic

    frames = [frame for _, frame in iter_frames(talking_clip[0])]
    video = write_video(tmp_path / "line.mp4", frames, 25)
    write_wav_atomic(tmp_path / "line.wav", load_audio(talking_clip[0]), 16_000)
    [record] = run_prepare([video], tmp_path / "dataset", jobs=1, features=(), progress=False)
    assert record.status == "ok", record.error
    assert record.audio.endswith("line.wav")


def test_the_main_face_is_the_largest_when_two_are_in_the_picture(talking_clip, tmp_path):
    import cv2

    frames = [frame for _, frame in iter_frames(talking_clip[0])][:40]
    # A half-size copy of the same speaker stands on the left; the full-size face on the right.
    both = [np.concatenate([np.pad(cv2.resize(f, (192, 192)), ((96, 96), (0, 0), (0, 0))), f],
                           axis=1) for f in frames]
    video = write_video(tmp_path / "two.mp4", both, 25, np.zeros(16_000 * 2, np.float32))
    [record] = run_prepare([video], tmp_path / "dataset", jobs=1, features=(), progress=False)
    assert record.status == "ok", record.error
    assert record.faces_seen >= 2
    motion = load_motion(tmp_path / "dataset" / record.segments[0].file)
    assert motion.landmarks[:, :, 0].min() > 192  # every frame on the big face, right half


@pytest.mark.slow
def test_real_frontal_clips_track_almost_every_frame(tmp_path):
    clips = [shared_file("data/talking-faces/deep_avsr/00022.mp4"),
             shared_file("data/talking-faces/video-retalking/1.mp4")]  # the second has VFR
    records = run_prepare(clips, tmp_path, jobs=2, features=(), progress=False)
    for record in records:
        assert record.status == "ok", record.error
        assert record.coverage >= 0.98
    vfr = records[1]
    # 6.1 s of variable-rate video becomes an even 25 fps track of the same length.
    assert abs(vfr.segments[0].frames - 6.1 * 25) <= 3
    assert TALKING_FACES.exists()
