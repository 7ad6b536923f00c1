"""Leave-source-out folds: whole sources held out, every train clip in exactly one fold."""

import pytest

from dimitra.backend.dataset.folds import FOLD_COUNT, select_clips, source_folds, source_name
from dimitra.backend.dataset.index import ClipRecord, SegmentRecord

# (clip id, split, source repository, seconds)
CLIPS = [("st_a", "train", "lab/styletalk", 60), ("st_b", "train", "lab/styletalk", 40),
         ("pc_a", "train", "web/pcavs", 30), ("pc_b", "train", "web/pcavs", 20),
         ("ed_a", "train", "tv/edtalk", 45), ("lrs_a", "train", "tv/lrs2", 25),
         ("mt_a", "train", "tv/mimic", 10), ("dv_a", "dev", "lab/styletalk", 20),
         ("un_a", "unseen", "studio/vidtimit", 5)]


def clip(clip_id: str, split: str, source: str, seconds: float) -> ClipRecord:
    frames = int(seconds * 25)
    return ClipRecord(clip_id, f"{clip_id}.mp4", f"{clip_id}.mp4", "hash", split=split,
                      source=f"{source}@abc:{clip_id}.mp4",
                      segments=[SegmentRecord(clip_id, f"clips/{clip_id}.npz", frames, 0.0)])


@pytest.fixture()
def clips():
    return [clip(*row) for row in CLIPS]


def test_folds_hold_out_whole_train_sources_and_cover_train_once(clips):
    folds = source_folds(clips)
    assert len(folds) == FOLD_COUNT
    train_sources = {source_name(c) for c in clips if c.split == "train"}
    assert sorted(s for fold in folds for s in fold) == sorted(train_sources)
    for number in range(1, FOLD_COUNT + 1):
        held_out = select_clips(clips, f"fold-{number}")
        trained = select_clips(clips, f"train-minus-fold-{number}")
        # No source on both sides, and together they are the train split.
        assert {source_name(c) for c in held_out} == set(folds[number - 1])
        assert not {source_name(c) for c in held_out} & {source_name(c) for c in trained}
        assert sorted(c.clip_id for c in held_out + trained) == sorted(
            c.clip_id for c in clips if c.split == "train")
    # Balanced by duration: the largest source (styletalk, 100 s) stands alone.
    assert ["lab/styletalk"] in folds


def test_folds_do_not_depend_on_clip_order_or_on_other_splits(clips):
    reordered = list(reversed(clips)) + [clip("new_dev", "dev", "else/where", 500)]
    assert source_folds(reordered) == source_folds(clips)


def test_manifest_splits_and_bad_fold_names(clips):
    assert [c.clip_id for c in select_clips(clips, "unseen")] == ["un_a"]
    failed = clip("bad", "dev", "lab/styletalk", 3)
    failed.status = "failed"
    assert "bad" not in [c.clip_id for c in select_clips(clips + [failed], "dev")]
    with pytest.raises(ValueError, match="numbered 1 to 3"):
        select_clips(clips, "fold-4")
    with pytest.raises(ValueError, match="need at least 3 train sources"):
        source_folds([c for c in clips if c.clip_id in ("st_a", "pc_a")])


def test_a_clip_without_a_repository_is_its_own_folder_prefix():
    record = ClipRecord("styletalk_Obama", "v.mp4", "v.mp4", "hash")
    assert source_name(record) == "styletalk"
