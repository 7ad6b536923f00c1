"""`dimitra prepare`: real talking-face video -> training clips (see backend/dataset/index.py).

Per clip, in a worker process: decode frames as a stream, track the main face, bridge short
gaps and split at long ones, resample to 25 fps, fit head pose, remove it (canonical
landmarks), take the clip's neutral shape and blink signal, cut the loudness-normalised
16 kHz audio to each segment and compute its speech features (cached by content).
Clips already prepared with the same content hash are skipped. A clip that fails is recorded
with its error and nothing of it is written; the other clips go on.
"""

import csv
import hashlib
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...retarget.face import measures
from ...retarget.face.canonical import CANONICAL_FACE_PATH, load_canonical_face
from ...retarget.face.pose import fit_head_pose, head_rotation, relative_pose, to_canonical
from ...retarget.motion_file import Motion, load_motion, save_motion
from .index import ClipRecord, SegmentRecord, load_index, save_index
from .tracks import MIN_SEGMENT_S, MODEL_FPS, clean_segments

PIPELINE_VERSION = "prepare-1"
DEFAULT_FEATURES = ("whisper-tiny-en",)   # the shipped model's
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".ogg", ".aac", ".opus")
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps


@dataclass
class ClipSource:
    clip_id: str
    video: Path
    audio: Path            # the video itself when the speech is its own audio track
    split: str = "train"
    speaker: str = ""
    license: str = ""
    source: str = ""
    language: str = ""


def find_sources(paths: list[str | Path], split: str = "train") -> list[ClipSource]:
    """Clips from video files, folders of videos, or a `manifest.csv` (talking-faces layout)."""
    sources: list[ClipSource] = []
    for path in map(Path, paths):
        if path.suffix == ".csv":
            sources += _from_manifest(path)
        elif path.is_dir():
            sources += [_from_video(p, split) for p in sorted(path.rglob("*"))
                        if p.suffix.lower() in VIDEO_SUFFIXES]
        else:
            sources.append(_from_video(path, split))
    ids = [s.clip_id for s in sources]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"several inputs share the clip id(s) {sorted(duplicates)}; "
                         "give each clip a distinct file name or use a manifest")
    return sources


def _from_video(video: Path, split: str) -> ClipSource:
    audio = next((video.with_suffix(s) for s in AUDIO_SUFFIXES if video.with_suffix(s).is_file()),
                 video)
    return ClipSource(video.stem, video, audio, split)


def _from_manifest(manifest: Path) -> list[ClipSource]:
    root = manifest.parent
    with manifest.open(newline="") as handle:
        return [ClipSource(row["clip_id"], root / row["video_path"], root / row["audio_path"],
                           row.get("split") or "train", row.get("speaker_label", ""),
                           row.get("license", ""),
                           f"{row.get('source_repo', '')}@{row.get('source_commit', '')[:12]}"
                           f":{row.get('source_path', '')}", row.get("language", ""))
                for row in csv.DictReader(handle)]


def content_hash(source: ClipSource) -> str:
    """sha256 of what determines the result: the media bytes, the pipeline, the canonical face."""
    digest = hashlib.sha256(PIPELINE_VERSION.encode())
    for path in dict.fromkeys([source.video, source.audio, CANONICAL_FACE_PATH]):
        if path.is_file():
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def prepare_clip(source: ClipSource, dataset: Path, features: tuple[str, ...]) -> ClipRecord:
    """The whole per-clip pipeline; raises with a clear message on unusable input."""
    from ..media.audio import audio_start_time, load_audio, normalize_loudness
    from ..media.video import probe_video

    record = ClipRecord(source.clip_id, str(source.video), str(source.audio), content_hash(source),
                        source.split, source.speaker, source.license, source.source,
                        source.language)
    info = probe_video(source.video)
    if source.audio == source.video and not info.has_audio:
        raise ValueError(f"{source.video}: the video has no audio track and no same-stem audio "
                         f"file ({', '.join(AUDIO_SUFFIXES)}) lies beside it")
    audio = normalize_loudness(load_audio(source.audio))
    audio_start = audio_start_time(source.audio) if source.audio == source.video else 0.0

    times, landmarks, faces_seen = track_video(source.video, info.width)
    record.source_fps, record.source_frames = info.fps, len(times)
    record.tracked_frames = int(np.isfinite(landmarks).all(axis=(1, 2)).sum())
    record.faces_seen = faces_seen
    if record.tracked_frames == 0:
        raise ValueError(f"{source.video}: no face found in any of its {len(times)} frames")
    segments = clean_segments(times, landmarks)
    if not segments:
        raise ValueError(f"{source.video}: the face is tracked in no stretch of at least "
                         f"{MIN_SEGMENT_S} s; nothing usable")

    canonical_face = load_canonical_face()
    fitted = [fit_head_pose(s.landmarks, canonical_face) for s in segments]
    canonical = [to_canonical(s.landmarks, pose).astype(np.float32) for s, pose in zip(segments, fitted)]
    neutral = measures.neutral_shape(np.concatenate(canonical))

    motions, audio_parts = [], []
    for index, (segment, pose, canon) in enumerate(zip(segments, fitted, canonical)):
        segment_id = source.clip_id if len(segments) == 1 else f"{source.clip_id}-part{index + 1}"
        first = round((segment.times_s[0] - audio_start) * 16_000)
        audio_part = _slice_padded(audio, first, len(segment.times_s) * SAMPLES_PER_FRAME)
        motion = Motion(
            landmarks=segment.landmarks, pose=relative_pose(pose, pose[0]), fps=MODEL_FPS,
            meta={"clip_id": source.clip_id, "segment_id": segment_id, "split": source.split,
                  "speaker": source.speaker, "source": source.source, "video": str(source.video),
                  "start_s": float(segment.times_s[0]), "pipeline": PIPELINE_VERSION},
            extras={"canonical": canon, "neutral": neutral,
                    "blink": measures.eyelid_aperture(canon),
                    "head_scale": pose.scale, "head_rotation": head_rotation(pose),
                    "head_translation": pose.translation, "audio": audio_part})
        motions.append(motion)
        audio_parts.append(audio_part)
        record.segments.append(SegmentRecord(segment_id, f"clips/{segment_id}.npz",
                                             len(segment.times_s), float(segment.times_s[0])))
    # Everything is computed before anything is written: a failure above leaves no trace.
    for segment, audio_part in zip(record.segments, audio_parts):
        segment.features = compute_features(dataset, audio_part, features)
    for segment, motion in zip(record.segments, motions):
        save_motion(dataset / segment.file, motion)
    return record


def track_video(video: Path, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(times (F,), landmarks (F, 478, 3) pixel frame of the source, NaN when missed, faces)."""
    from ..media.video import iter_frames
    from ..tracking.face_tracker import FaceTracker

    times, points = [], []
    missing = np.full((478, 3), np.nan, dtype=np.float32)
    with FaceTracker() as tracker:
        for time_s, frame in iter_frames(video):
            found = tracker.track(frame)
            times.append(time_s)
            # Frames may be decoded smaller than the source; landmarks go back to source pixels.
            points.append(missing if found is None else found * (width / frame.shape[1]))
        faces = tracker.max_faces_seen
    return np.asarray(times, dtype=np.float64), np.stack(points), faces


def compute_features(dataset: Path, audio: np.ndarray, extractors: tuple[str, ...]) -> dict[str, str]:
    paths: dict[str, str] = {}
    if not extractors:
        return paths
    from ..features.speech_features import FeatureCache, get_extractor

    cache = FeatureCache(dataset / "features")
    for name in extractors:
        cache.get_or_compute(get_extractor(name), audio, MODEL_FPS)
        paths[name] = feature_path(dataset, audio, name)
    return paths


def feature_path(dataset: Path, audio: np.ndarray, extractor: str) -> str:
    """Where the current version of `extractor` keeps this audio's features, relative to the
    dataset (a segment pointing elsewhere holds features of an older computation)."""
    from ..features.speech_features import FeatureCache, get_extractor

    path = FeatureCache(dataset / "features").path_for(get_extractor(extractor), audio, MODEL_FPS)
    return str(path.relative_to(dataset))


def _slice_padded(samples: np.ndarray, start: int, length: int) -> np.ndarray:
    """samples[start:start+length], zero-padded where the audio does not cover the video."""
    out = np.zeros(length, dtype=np.float32)
    lo, hi = max(start, 0), min(start + length, len(samples))
    if hi > lo:
        out[lo - start:hi - start] = samples[lo:hi]
    return out


def run_one(source: ClipSource, dataset: Path, features: tuple[str, ...]) -> ClipRecord:
    """prepare_clip, with a failure recorded instead of raised (what every worker runs)."""
    try:
        return prepare_clip(source, dataset, features)
    except Exception as error:  # noqa: BLE001 -- one bad clip must not stop the run; its message is kept
        return failed_record(source, f"{type(error).__name__}: {error}")


def failed_record(source: ClipSource, error: str) -> ClipRecord:
    return ClipRecord(source.clip_id, str(source.video), str(source.audio), "",
                      source.split, source.speaker, source.license, source.source,
                      source.language, status="failed", error=error)


def run_prepare(paths: list[str | Path], dataset: str | Path, jobs: int = 0,
                features: tuple[str, ...] = DEFAULT_FEATURES, split: str = "train",
                progress: bool = True, ray: str | None = None) -> list[ClipRecord]:
    """Prepare every clip not already done; returns the records of this run's inputs.

    `ray` (auto, local or a cluster's ADDRESS: backend/scale): the clips become Ray tasks,
    `jobs` at a time (default: the cluster's CPUs), instead of local worker processes.
    """
    from tqdm import tqdm

    dataset = Path(dataset)
    dataset.mkdir(parents=True, exist_ok=True)
    sources = find_sources(paths, split)
    done = {c.clip_id: c for c in load_index(dataset) if c.status == "ok"}
    todo, results = [], {}
    for source in sources:
        previous = done.get(source.clip_id)
        if previous and previous.content_hash == content_hash(source) and all(
                (dataset / s.file).is_file() for s in previous.segments):
            for segment in previous.segments:  # features asked for now may be new or stale
                audio = None
                if features:
                    audio = load_motion(dataset / segment.file).extras["audio"]
                missing = tuple(f for f in features
                                if segment.features.get(f) != feature_path(dataset, audio, f))
                if missing:
                    segment.features.update(compute_features(dataset, audio, missing))
            # The media are unchanged, but the manifest may now say more (or other) about them.
            for name in ("split", "speaker", "license", "source", "language"):
                setattr(previous, name, getattr(source, name))
            results[source.clip_id] = previous
        else:
            todo.append(source)

    bar = tqdm(total=len(sources), initial=len(results), unit="clip", desc="prepare",
               disable=not progress, file=sys.stderr)
    if ray is not None and todo:
        from ..scale.prepare import prepare_on_ray

        for record in prepare_on_ray(todo, dataset, features, ray, jobs):
            results[record.clip_id] = record
            bar.update()
        todo = []
    jobs = jobs or min(len(todo), multiprocessing.cpu_count()) or 1
    if jobs == 1:
        for source in todo:
            results[source.clip_id] = run_one(source, dataset, features)
            bar.update()
    else:
        # spawn: MediaPipe's graph threads do not survive a fork.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = [pool.submit(run_one, s, dataset, features) for s in todo]
            for future in as_completed(futures):
                record = future.result()
                results[record.clip_id] = record
                bar.update()
    bar.close()

    merged = {c.clip_id: c for c in load_index(dataset)}
    merged.update(results)
    save_index(dataset, list(merged.values()))
    _remove_stale_segments(dataset, list(merged.values()))
    return [results[s.clip_id] for s in sources]


def _remove_stale_segments(dataset: Path, clips: list[ClipRecord]) -> None:
    """Segment files no index entry points to (a clip re-prepared into fewer parts)."""
    live = {s.file for c in clips if c.status == "ok" for s in c.segments}
    for path in (dataset / "clips").glob("*.npz"):
        if str(path.relative_to(dataset)) not in live:
            path.unlink()


def summary_table(records: list[ClipRecord]) -> str:
    header = f"{'clip':44} {'split':5} {'frames':>7} {'tracked':>8} {'parts':>5} {'faces':>5}  status"
    lines = [header, "-" * len(header)]
    for r in records:
        status = "ok" if r.status == "ok" else f"FAILED: {r.error}"
        lines.append(f"{r.clip_id[:44]:44} {r.split:5} {r.source_frames:7d} {r.coverage:8.1%} "
                     f"{len(r.segments):5d} {r.faces_seen:5d}  {status}")
    ok = [r for r in records if r.status == "ok"]
    total_source = sum(r.source_frames for r in ok)
    total_tracked = sum(r.tracked_frames for r in ok)
    lines.append("-" * len(header))
    lines.append(f"{len(ok)} of {len(records)} clips prepared; {sum(r.frames for r in ok)} frames "
                 f"at 25 fps ({sum(r.frames for r in ok) / MODEL_FPS:.1f} s); tracked "
                 f"{total_tracked}/{total_source} source frames "
                 f"({total_tracked / max(total_source, 1):.1%})")
    failed = [r for r in records if r.status != "ok"]
    if failed:
        lines.append(f"{len(failed)} failed:")
        lines += [f"  {r.clip_id}: {r.error}" for r in failed]
    return "\n".join(lines)
