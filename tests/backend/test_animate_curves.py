"""`dimitra animate --curves`: generated speech as ARKit/viseme curves a game engine loads."""

import json

import numpy as np
import pytest

from dimitra.backend.cli import main as dimitra
from dimitra.backend.demo import REFERENCE_IMAGE, SPEECH
from dimitra.backend.media.audio import load_audio, write_wav_atomic
from dimitra.backend.model.checkpoint import DEFAULT_MODEL
from dimitra.retarget.curves import builtin_face, read_curves
from dimitra.retarget.face.measures import inner_lip_gap
from dimitra.retarget.motion_file import load_motion
from dimitra.retarget.sample_face import INTER_OCULAR_M

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model yet")


@pytest.fixture(scope="module")
def line(tmp_path_factory):
    """6 s of the bundled speech, and its motion file at 30 fps (seed 3)."""
    folder = tmp_path_factory.mktemp("line")
    clip = folder / "line.wav"
    write_wav_atomic(clip, load_audio(SPEECH)[:16_000 * 6], 16_000)
    motion = folder / "line.npz"
    assert dimitra(["animate", str(clip), "--ref", str(REFERENCE_IMAGE), "--out", str(motion),
                    "--fps", "30", "--seed", "3"]) == 0
    return clip, load_motion(motion)


def animate_curves(clip, out, *flags) -> int:
    return dimitra(["animate", str(clip), "--ref", str(REFERENCE_IMAGE), "--out", str(out),
                    "--fps", "30", "--seed", "3", *flags])


def test_arkit_csv_reproduces_the_generated_mouth_on_the_sample_rig(line, tmp_path):
    """The round trip of the issue: the CSV's weights applied to the sample rig's keys open
    its mouth with the motion file's opening (r >= 0.9) and amplitude (0.8-1.2)."""
    clip, motion = line
    out = tmp_path / "line.csv"
    assert animate_curves(clip, out, "--curves", "arkit") == 0
    curves = read_curves(out)
    assert len(curves.names) == 52 and curves.weights.shape[0] == motion.frame_count
    rig = builtin_face("arkit")
    deltas = {key.name: key.deltas[:478] for key in rig.shape_keys}
    moved = rig.vertices[:478] + np.einsum("tk,knd->tnd", curves.weights,
                                           np.stack([deltas[n] for n in curves.names]))
    opening = np.linalg.norm(moved[:, 13] - moved[:, 14], axis=-1) / INTER_OCULAR_M
    wanted = inner_lip_gap(motion.extras["canonical"].astype(float))
    assert np.corrcoef(opening, wanted)[0, 1] >= 0.9
    assert 0.8 < opening.std() / wanted.std() < 1.2
    jaw = curves.weights[:, curves.names.index("jawOpen")]
    assert np.corrcoef(jaw, wanted)[0, 1] > 0.8          # the jaw opens through jawOpen
    assert np.degrees(np.abs(curves.rotations[:, :3]).max()) > 0.5   # the head moves


def test_viseme_json_and_an_existing_file_refused(line, tmp_path, capsys):
    clip, motion = line
    out = tmp_path / "line.json"
    assert animate_curves(clip, out, "--curves", "visemes") == 0
    data = json.loads(out.read_text())
    assert data["set"] == "visemes" and len(data["names"]) == 15
    assert len(data["frames"]) == motion.frame_count
    before = out.read_bytes()
    capsys.readouterr()
    assert animate_curves(clip, out, "--curves", "visemes") == 2
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == before
    assert animate_curves(clip, tmp_path / "line.npz", "--curves", "arkit") == 2
    assert "--out NAME.csv" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line.json"]
