"""Where the speech is: the project's one home for telling speech from silence by loudness.

Every definition here reads the same measure, the RMS level of each video frame in dBFS
(`backend.media.audio.frame_rms_db`, floored at FLOOR_DB = -100 dB). Three questions are asked
of it, and each has its own threshold because each serves a different purpose:

- `silent_frames` / DIGITAL_SILENCE_DB (absolute): which frames of loudness-normalised input
  are digital silence, so generation can bring the face to rest (closed mouth, slow head).
- `holds_no_speech` / NO_SPEECH_PEAK_DB (absolute): whether a whole chunk of audio is too quiet
  to hold any speech, so the phone recogniser is not run on it.
- `speech_frames` / SPEECH_RANGE_DB (relative to the clip): the speech mask of the evaluation
  metrics (docs/EVAL.md) and of training's closure weighting, for recordings of any level.

numpy only (no torch), so the evaluation code can use it.
"""

import numpy as np

from ..media.audio import FLOOR_DB, SAMPLE_RATE, frame_rms_db

# ---------------------------------------------------------------------------------------------
# Absolute thresholds (generation)
# ---------------------------------------------------------------------------------------------

# Frame loudness (dBFS) under which a frame is silence, for audio normalised to -23 LUFS
# (backend.media.audio.normalize_loudness, as generation does). Absolute, because the question
# is "is there any sound here at all": at that normalised level the frames of speech lie tens
# of dB above -55 dBFS and digital silence at the floor (-100 dB), far below it. The model was
# never trained on such silence, so the generator brings the face to rest there instead
# (backend.generation.generator.rest_weights).
DIGITAL_SILENCE_DB = -55.0

# A chunk of audio whose loudest frame is under this (dBFS) holds no speech. The test is on the
# chunk's peak, not on each frame: it only spares PocketSphinx chunks of (near) digital zeros,
# in which the recogniser invents phones; any audible speech in the chunk lifts its peak above.
NO_SPEECH_PEAK_DB = -50.0


def silent_frames(audio_16k: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames,) bool: frames quieter than DIGITAL_SILENCE_DB.

    Frames are counted from the audio's length (`frame_rms_db`) and cut or padded to n_frames;
    frames past the audio's end are not marked silent (there is no audio to call silent).
    """
    silence = np.zeros(n_frames, bool)
    loudness = frame_rms_db(audio_16k, fps)[:n_frames]
    silence[:len(loudness)] = loudness < DIGITAL_SILENCE_DB
    return silence


def holds_no_speech(samples_16k: np.ndarray, fps: float) -> bool:
    """True when no frame of `samples_16k` (16 kHz, at least one frame long) reaches
    NO_SPEECH_PEAK_DB."""
    return bool(frame_rms_db(samples_16k, fps).max() < NO_SPEECH_PEAK_DB)


# ---------------------------------------------------------------------------------------------
# The relative speech mask (evaluation and training)
# ---------------------------------------------------------------------------------------------

AUDIO_RATE = SAMPLE_RATE
# Speech: frames within SPEECH_RANGE_DB of the clip's loud frames (the
# SPEECH_REFERENCE_PERCENTILE of its frame RMS), as docs/EVAL.md defines it. Relative to the
# clip, because the question is "where does this speaker talk": a noisy recording's floor can
# sit above any absolute threshold, and the mask must still leave its pauses out. The 95th
# percentile rather than the maximum, so a single click or burst does not set the reference.
SPEECH_RANGE_DB = 30.0
SPEECH_REFERENCE_PERCENTILE = 95.0
# Speech frames are dilated by 80 ms so the silent hold of a stop consonant (the closure of a p
# or b, where the lips meet and the audio goes quiet) stays inside speech.
SPEECH_DILATION_S = 0.08
# The floor of frame_loudness_db: no audio at all (digital zeros, or frames past the audio's
# end). Such frames are never speech, whatever the clip's level.
SILENCE_DB = FLOOR_DB


def frame_loudness_db(audio_16k: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """(T,) RMS level in dBFS of each of the truth's n_frames (backend.media.audio's measure);
    frames the audio does not reach read SILENCE_DB, the floor."""
    return frame_rms_db(audio_16k, fps, AUDIO_RATE, num_frames=n_frames).astype(np.float64)


def speech_frames(audio_16k: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """(T,) bool: frames within SPEECH_RANGE_DB of the clip's loud frames, dilated by
    SPEECH_DILATION_S."""
    level = frame_loudness_db(audio_16k, n_frames, fps)
    if n_frames == 0:
        return np.zeros(0, dtype=bool)
    reference = np.percentile(level, SPEECH_REFERENCE_PERCENTILE)
    speech = (level >= reference - SPEECH_RANGE_DB) & (level > SILENCE_DB)
    radius = round(SPEECH_DILATION_S * fps)
    if radius > 0 and speech.any():
        padded = np.pad(speech, radius)
        speech = np.lib.stride_tricks.sliding_window_view(padded, 2 * radius + 1).any(axis=-1)
    return speech
