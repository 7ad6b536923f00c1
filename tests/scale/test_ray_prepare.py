"""`dimitra prepare --ray`: clips as real Ray tasks, the same clips as local workers make, a bad
clip failing alone, the index written once at the end."""

import shutil

import numpy as np

from dimitra.backend.dataset import prepare
from dimitra.backend.dataset.index import load_index
from dimitra.retarget.motion_file import load_motion


def test_clips_as_ray_tasks_match_the_local_run(talking_clip, tmp_path, monkeypatch):
    good = tmp_path / "good.mp4"
    shutil.copy(talking_clip[0], good)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(50_000))
    [local, _] = prepare.run_prepare([good, corrupt], tmp_path / "local", jobs=1, features=(),
                                     progress=False)
    saves = []
    real_save = prepare.save_index
    monkeypatch.setattr(prepare, "save_index",
                        lambda *args: (saves.append(args), real_save(*args))[1])
    records = prepare.run_prepare([good, corrupt], tmp_path / "ray", jobs=2, features=(),
                                  progress=False, ray="local")
    status = {r.clip_id: r for r in records}
    assert status["good"].status == "ok", status["good"].error
    assert status["corrupt"].status == "failed" and "corrupt.mp4" in status["corrupt"].error
    assert len(saves) == 1   # the index, once, from every task's record
    assert {c.clip_id: c.status for c in load_index(tmp_path / "ray")} == {
        "good": "ok", "corrupt": "failed"}
    assert sorted(p.name for p in (tmp_path / "ray" / "clips").iterdir()) == ["good.npz"]
    ours = load_motion(tmp_path / "ray" / status["good"].segments[0].file)
    theirs = load_motion(tmp_path / "local" / local.segments[0].file)
    assert np.array_equal(ours.landmarks, theirs.landmarks)
    assert np.array_equal(ours.extras["canonical"], theirs.extras["canonical"])
    assert status["good"].content_hash == local.content_hash


def test_a_rerun_on_ray_skips_what_is_done(talking_clip, tmp_path):
    dataset = tmp_path / "dataset"
    [first] = prepare.run_prepare([talking_clip[0]], dataset, features=(), progress=False,
                                  ray="local")
    path = dataset / first.segments[0].file
    before = path.stat().st_mtime_ns
    [again] = prepare.run_prepare([talking_clip[0]], dataset, features=(), progress=False,
                                  ray="127.0.0.1:1")   # nothing to do: Ray is not even asked
    assert again.status == "ok" and path.stat().st_mtime_ns == before
