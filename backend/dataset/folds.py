"""Splits of a prepared dataset by whole sources: the manifest's splits and leave-source-out folds.

A *source* is the recording set-up a clip comes from: the repository it was published in
(`owner/name` from ClipRecord.source), else the folder prefix of its clip id. Clips of one
source share cameras, rooms, microphones and crops, so a model scored on clips of a source it
trained on is scored on familiar recordings. The folds hold out whole sources of `train`:

    "train", "dev", "unseen", ...   the clips whose manifest split has that name
    "fold-K"                        the train clips of fold K's sources (K = 1..FOLD_COUNT)
    "train-minus-fold-K"            the other train clips: what a fold-K model trains on

Folds are made from the dataset's train sources alone, largest first into the fold with the
fewest seconds so far, so they are the same on every machine and need no stored list.
"""

import re

from .index import ClipRecord

FOLD_COUNT = 3
_FOLD = re.compile(r"^(train-minus-)?fold-(\d+)$")


def source_name(clip: ClipRecord) -> str:
    """The clip's source: `owner/name` of its repository, else its clip id's folder prefix."""
    if clip.source:
        return clip.source.split("@", 1)[0]
    return clip.clip_id.split("_", 1)[0]


def source_folds(clips: list[ClipRecord], count: int = FOLD_COUNT) -> list[list[str]]:
    """The train sources in `count` groups of similar total duration (fold K = item K - 1)."""
    seconds: dict[str, float] = {}
    for clip in clips:
        if clip.status == "ok" and clip.split == "train":
            seconds[source_name(clip)] = seconds.get(source_name(clip), 0.0) + clip.frames / 25.0
    if len(seconds) < count:
        raise ValueError(f"{count} leave-source-out folds need at least {count} train sources; "
                         f"the dataset has {len(seconds)}: {', '.join(sorted(seconds)) or 'none'}")
    folds: list[list[str]] = [[] for _ in range(count)]
    totals = [0.0] * count
    for source in sorted(seconds, key=lambda name: (-seconds[name], name)):
        smallest = totals.index(min(totals))
        folds[smallest].append(source)
        totals[smallest] += seconds[source]
    return folds


def select_clips(clips: list[ClipRecord], split: str) -> list[ClipRecord]:
    """The prepared ("ok") clips of a split name (see the module docstring)."""
    ok = [clip for clip in clips if clip.status == "ok"]
    match = _FOLD.match(split)
    if not match:
        return [clip for clip in ok if clip.split == split]
    folds = source_folds(ok)
    number = int(match.group(2))
    if not 1 <= number <= len(folds):
        raise ValueError(f"split {split!r}: folds are numbered 1 to {len(folds)}")
    held_out = set(folds[number - 1])
    keep_held_out = match.group(1) is None
    return [clip for clip in ok if clip.split == "train"
            and (source_name(clip) in held_out) == keep_held_out]
