"""Generated canonical motion -> a motion file in the reference image's pixel frame."""

import logging

import numpy as np

from ...retarget.face.pose import PIXEL_FROM_UPRIGHT, Similarity, pose_from_relative
from ...retarget.motion_file import Motion
from .generator import GenerationOptions, MotionGenerator

log = logging.getLogger(__name__)

MODEL_FPS = 25.0
CHUNK_FRAMES = 4096


def audio_conditioning(features: np.ndarray, audio_16k: np.ndarray, options: GenerationOptions,
                       feature_names: str = "", language: str | None = None,
                       lip_features: np.ndarray | None = None) -> dict:
    """What the generator takes from the audio, as `generate` keyword arguments: the speech
    features (T, F), silent frames (T,) bool, with closure guidance on bilabials (T,), and the
    lips head's features (T, F_l) when the model has a head.

    feature_names is the model's feature extractor. The bilabials come from its last column
    when that is "bilabials"; else, with options.bilabials "auto", from the detector shipped
    for those features (backend.features.bilabials), and from PocketSphinx when there is none
    or options.bilabials is "pocketsphinx". PocketSphinx knows English phones only: for
    speech in another `language` (an ISO code; None = unknown) the detector is used, or no
    bilabial guidance when there is no detector."""
    from ..features.speech_activity import silent_frames

    frames = len(features)
    silence = silent_frames(audio_16k, frames, MODEL_FPS)
    bilabials = None
    if options.closure_guidance > 0 and feature_names.endswith("bilabials"):
        bilabials = np.ascontiguousarray(features[:, -1])
    elif options.closure_guidance > 0:
        from ..features.bilabials import bilabial_frames, shipped_detector

        english = language in (None, "en")
        detector = shipped_detector(feature_names)
        if options.bilabials == "pocketsphinx" and not english:
            log.warning("PocketSphinx recognises English phones; for %r speech the lips learn "
                        "of p, b, m from the detector instead", language)
        if detector is not None and (options.bilabials == "auto" or not english):
            bilabials = detector(features)
        elif not english:
            bilabials = None
        else:
            bilabials = np.zeros(frames, np.float32)
            found = bilabial_frames(audio_16k, MODEL_FPS)[:frames]
            bilabials[:len(found)] = found
    return {"features": features, "silence": silence, "bilabials": bilabials,
            "lip_features": lip_features}


def generate_motion(generator: MotionGenerator, conditioning: dict, reference_canonical: np.ndarray,
                    reference_pose: Similarity, options: GenerationOptions, meta: dict | None = None,
                    progress=None) -> Motion:
    """conditioning: `features` (T, F) at 25 fps, optional `bilabials` (T,) and `silence` (T,);
    the reference face's canonical shape (478, 3) and its head pose (canonical -> reference
    pixels). The reference may be mid-expression: its neutral shape is estimated first, so the
    mouth can close. progress(fraction) is called after every generated window."""
    neutral = generator.space.neutralise(reference_canonical)
    canonical, pose = generator.generate(neutral=neutral, options=options, progress=progress,
                                         **conditioning)
    head = pose_from_relative(pose.astype(np.float64), reference_pose)
    landmarks = np.empty_like(canonical)
    for start in range(0, len(canonical), CHUNK_FRAMES):  # bounded float64 temporaries
        part = slice(start, start + CHUNK_FRAMES)
        landmarks[part] = head[part].apply(canonical[part])
    return Motion(landmarks=landmarks, pose=pose, fps=MODEL_FPS,
                  meta={"options": vars(options), **(meta or {})},
                  extras={"canonical": canonical, "neutral": neutral})


def predict_prepared_clip(generator: MotionGenerator, clip: Motion, features: np.ndarray,
                          options: GenerationOptions, lip_features: np.ndarray | None = None
                          ) -> Motion:
    """The EVAL.md protocol: generate from a prepared clip's audio and its first frame."""
    # Dataset clips store the head rotation in upright axes; the similarity wants pixel axes.
    first_pose = Similarity(clip.extras["head_scale"][0],
                            PIXEL_FROM_UPRIGHT @ clip.extras["head_rotation"][0],
                            clip.extras["head_translation"][0])
    conditioning = audio_conditioning(features, clip.extras["audio"], options,
                                      generator.bundle.feature_extractor,
                                      lip_features=lip_features)
    return generate_motion(generator, conditioning,
                           clip.extras["canonical"][0], first_pose, options,
                           {"segment_id": clip.meta.get("segment_id", "")})


def predict_split(model_path, dataset, split: str, out_dir, options: GenerationOptions) -> int:
    """Write `<segment_id>.npz` predictions for every prepared segment of a split."""
    from pathlib import Path

    from ...retarget.motion_file import save_motion
    from ..dataset.index import iter_segments, load_features
    from ..model.checkpoint import load_bundle

    bundle = load_bundle(model_path)
    generator = MotionGenerator(bundle)
    count = 0
    for _, segment, clip in iter_segments(dataset, split):
        features = load_features(dataset, segment, bundle.feature_extractor)
        lip_features = (None if bundle.lips_head is None
                        else load_features(dataset, segment, bundle.lips_head.features))
        save_motion(Path(out_dir) / f"{segment.segment_id}.npz",
                    predict_prepared_clip(generator, clip, features, options, lip_features))
        count += 1
    return count
