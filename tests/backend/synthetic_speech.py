"""Speech with known phone timing, in any language espeak-ng speaks: syllables synthesised one
by one, trimmed to their sound and joined, so where each starts and ends is known exactly."""

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dimitra.backend.media.audio import load_audio

GAP_S = 0.06          # silence between syllables
BILABIAL_ONSETS = ("p", "b", "m")


@dataclass
class SyllableLine:
    audio: np.ndarray     # (N,) float32, 16 kHz
    syllables: list[str]
    starts_s: np.ndarray  # (S,) where each syllable's sound starts
    ends_s: np.ndarray    # (S,) and ends

    @property
    def bilabial(self) -> np.ndarray:
        """(S,) bool: the syllable starts with p, b or m (the lips must meet at its start)."""
        return np.array([s[0] in BILABIAL_ONSETS for s in self.syllables])


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def syllable_line(voice: str, syllables: list[str], rate_wpm: int = 160) -> SyllableLine:
    """The syllables spoken by espeak-ng's `voice` (e.g. "fr", "de", "es", "ja", "en-us")."""
    if not espeak_available():
        raise RuntimeError("espeak-ng is not installed: `apt-get install espeak-ng` (.ci/run "
                           "installs it)")
    pieces, starts, ends, position = [], [], [], 0.25   # a short silence leads in
    with tempfile.TemporaryDirectory() as folder:
        for index, syllable in enumerate(syllables):
            path = Path(folder) / f"{index}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-w", str(path),
                            syllable], check=True, capture_output=True)
            sound = _trimmed(load_audio(path))
            pieces.append(sound)
            starts.append(position)
            position += len(sound) / 16_000
            ends.append(position)
            position += GAP_S
    audio = np.zeros(int((position + 0.25) * 16_000), np.float32)
    for piece, start in zip(pieces, starts):
        first = int(round(start * 16_000))
        audio[first:first + len(piece)] = piece
    return SyllableLine(audio, list(syllables), np.array(starts), np.array(ends))


def _trimmed(samples: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    """The samples from the first to the last 10 ms block within 40 dB of the loudest."""
    blocks = samples[:len(samples) // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10(np.mean(blocks.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() + floor_db)
    return samples[loud[0] * 160:(loud[-1] + 1) * 160]
