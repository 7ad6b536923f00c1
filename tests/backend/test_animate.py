"""`dimitra animate` with the shipped model: what a user sees in the motion file and preview."""

import numpy as np
import pytest

from dimitra.backend.cli import main as dimitra
from dimitra.backend.demo import REFERENCE_IMAGE, SPEECH
from dimitra.backend.evaluation.metrics import normalise_sequence
from dimitra.backend.generation.animate import AnimateRequest, Animator
from dimitra.backend.generation.generator import GenerationOptions
from dimitra.backend.media.audio import load_audio, write_wav_atomic
from dimitra.backend.model.checkpoint import DEFAULT_MODEL
from dimitra.retarget.face.measures import eyelid_aperture, inner_lip_gap
from dimitra.retarget.motion_file import load_motion

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model yet")


@pytest.fixture(scope="module")
def animator():
    return Animator()


@pytest.fixture(scope="module")
def speech():
    return load_audio(SPEECH)


def mouth_gap(motion):
    return inner_lip_gap(normalise_sequence(motion.landmarks).landmarks)


def test_the_mouth_moves_with_speech_and_rests_in_the_pause(animator, speech):
    """Speech, 3 s of silence, speech: the mouth talks, rests closed, talks again."""
    pause = np.zeros(16_000 * 3, np.float32)
    audio = np.concatenate([speech[:16_000 * 4], pause, speech[16_000 * 4:16_000 * 8]])
    motion, decoded, reference = animator.animate(AnimateRequest(audio_bytes(audio), REFERENCE_IMAGE))
    assert motion.landmarks.shape == (round(len(decoded) / 640), 478, 3)
    assert np.isfinite(motion.landmarks).all()
    width, height = reference.image_size
    xy = motion.landmarks[..., :2]
    assert (xy > 0).all() and (xy[..., 0] < width).all() and (xy[..., 1] < height).all()
    gap = mouth_gap(motion)
    talking = np.concatenate([gap[10:95], gap[185:]])
    resting = gap[120:160]                       # well inside the pause
    assert talking.max() > 0.08                  # it opens
    assert talking.std() > 2 * resting.std()     # it moves more when there is speech
    assert np.median(resting) < 0.03             # and rests closed


def test_silence_gives_a_closed_still_mouth_and_living_eyes(animator, tmp_path):
    silence = tmp_path / "silence.wav"
    write_wav_atomic(silence, np.zeros(16_000 * 8, np.float32), 16_000)
    motion, _, _ = animator.animate(AnimateRequest(silence, REFERENCE_IMAGE))
    gap = mouth_gap(motion)
    assert np.median(gap) < 0.05 and gap.std() < 0.03
    assert np.degrees(np.abs(motion.pose[:, :3])).max() < 15  # small head motion, no drift away


def test_same_seed_same_motion_other_seed_other_motion(animator, speech):
    audio = speech[:16_000 * 3]
    a, _, _ = animator.animate(AnimateRequest(audio_bytes(audio), REFERENCE_IMAGE,
                                              GenerationOptions(seed=3)))
    b, _, _ = animator.animate(AnimateRequest(audio_bytes(audio), REFERENCE_IMAGE,
                                              GenerationOptions(seed=3)))
    c, _, _ = animator.animate(AnimateRequest(audio_bytes(audio), REFERENCE_IMAGE,
                                              GenerationOptions(seed=4)))
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert np.abs(a.landmarks - c.landmarks).max() > 0.1


def test_no_window_seams_in_long_audio(animator, speech):
    """Frame-to-frame velocity at window borders looks like velocity inside windows."""
    features = animator.speech_features(np.tile(speech, 3))  # 46 s: a dozen windows
    neutral = animator.bundle.motion_space.canonical_face
    canonical, _ = animator.generator.generate(features, neutral)
    speed = np.linalg.norm(np.diff(canonical, axis=0), axis=2).mean(1)   # (T-1,)
    config = animator.generator.config
    hop = config.window - config.context
    borders = np.arange(config.window - 1, len(speed), hop)
    inside = np.setdiff1d(np.arange(len(speed)), np.concatenate([borders - 1, borders, borders + 1]))
    assert np.median(speed[borders]) < np.percentile(speed[inside], 90)
    assert np.median(speed[borders]) < 2 * np.median(speed[inside])


def test_no_blink_keeps_the_eyes_open(animator, speech):
    audio = speech[:16_000 * 8]
    open_eyes, _, _ = animator.animate(AnimateRequest(audio_bytes(audio), REFERENCE_IMAGE,
                                                      GenerationOptions(blink=False)))
    aperture = eyelid_aperture(open_eyes.extras["canonical"])
    neutral = eyelid_aperture(open_eyes.extras["neutral"][None])[0]
    assert (aperture >= neutral - 0.02).all()


def test_cli_writes_the_motion_file_at_the_asked_fps_and_a_preview(tmp_path, capfd):
    clip = tmp_path / "line.wav"
    write_wav_atomic(clip, load_audio(SPEECH)[:16_000 * 2], 16_000)
    out, preview = tmp_path / "line.npz", tmp_path / "line.mp4"
    assert dimitra(["animate", str(clip), "--ref", str(REFERENCE_IMAGE), "--out", str(out),
                    "--fps", "29.97", "--preview", str(preview), "--seed", "1"]) == 0
    motion = load_motion(out)
    assert motion.fps == pytest.approx(29.97) and abs(motion.frame_count - 59) <= 1
    assert motion.meta["image_size"] == [384, 384]
    from dimitra.backend.media.video import probe_video

    info = probe_video(preview)
    assert info.has_audio and info.width == 384
    # MediaPipe's native start-up notes never reach the terminal (fd 2), only Dimitra's lines.
    err = capfd.readouterr().err
    assert not [line for line in err.splitlines() if line.startswith(("W0000", "I0000", "INFO:"))]


@pytest.mark.parametrize("seconds", [0.2, 1.0])
def test_very_short_clips_work(animator, speech, seconds):
    motion, _, _ = animator.animate(AnimateRequest(audio_bytes(speech[:int(16_000 * seconds)]),
                                                   REFERENCE_IMAGE))
    assert motion.frame_count == round(seconds * 25)
    assert np.isfinite(motion.landmarks).all()


def test_music_moves_the_mouth_less_than_speech(animator, speech):
    """Chords with no voice: finite motion, the face in the picture, no speech-like flapping."""
    t = np.arange(16_000 * 6) / 16_000
    notes = [261.6, 329.6, 392.0, 523.3]
    chord = sum(np.sin(2 * np.pi * f * t * (1 + 0.5 * (t // 1.5 % 2))) for f in notes)
    music = (0.2 * chord / np.abs(chord).max() * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))**2)
    motion, _, reference = animator.animate(AnimateRequest(audio_bytes(music.astype(np.float32)),
                                                           REFERENCE_IMAGE))
    assert np.isfinite(motion.landmarks).all() and np.isfinite(motion.pose).all()
    width = reference.image_size[0]
    assert (motion.landmarks[..., 0] > 0).all() and (motion.landmarks[..., 0] < width).all()
    talking, _, _ = animator.animate(AnimateRequest(audio_bytes(speech[:16_000 * 6]), REFERENCE_IMAGE))
    assert mouth_gap(motion).std() < mouth_gap(talking).std()


def test_a_face_free_reference_is_refused_clearly(animator, tmp_path):
    from PIL import Image

    blank = tmp_path / "wall.png"
    Image.new("RGB", (256, 256), (120, 120, 120)).save(blank)
    with pytest.raises(ValueError, match="wall.png"):
        animator.animate(AnimateRequest(SPEECH, blank))


def audio_bytes(samples: np.ndarray) -> bytes:
    import io

    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16_000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def test_the_command_line_defaults_are_the_generation_defaults():
    from dimitra.backend import cli

    args = cli.build_parser().parse_args(["animate", "a.wav", "--ref", "r.png", "--out", "o.npz"])
    assert GenerationOptions(**cli._generation_options(args)) == GenerationOptions()
    evaluate = cli.build_parser().parse_args(["eval", "data"])
    defaults = GenerationOptions()
    for name in ("seed", "expressiveness", "steps", "lip_contact", "lip_sharpen",
                 "closure_guidance", "audio_delay", "bilabials"):
        assert getattr(evaluate, name) == getattr(defaults, name), name
    assert cli._eval_options(evaluate) == defaults
    flipped = cli.build_parser().parse_args(["animate", "a.wav", "--ref", "r.png", "--out",
                                             "o.npz", "--no-blink", "--steps", "4"])
    assert cli._generation_options(flipped)["blink"] is False
    assert cli._generation_options(flipped)["steps"] == 4


def test_the_options_are_defined_once(monkeypatch):
    """GenerationOptions, the protocol's OPTION_TYPES and the command line's flags are all
    derived from backend.protocol.options.OPTIONS: a row added there shows up in all three."""
    import dataclasses

    from dimitra.backend import cli
    from dimitra.backend.generation import generator
    from dimitra.backend.protocol import messages, options

    table = {o.name: (o.type, o.default) for o in options.OPTIONS}
    assert {f.name: (f.type, f.default) for f in dataclasses.fields(GenerationOptions)} == table
    assert messages.OPTION_TYPES == {name: kind for name, (kind, _) in table.items()}
    for command, argv in ((options.ANIMATE, ["animate", "a.wav", "--ref", "r", "--out", "o"]),
                          (options.EVAL, ["eval", "data"])):
        args = vars(cli.build_parser().parse_args(argv))
        for option in options.cli_options(command):
            assert args[option.name] == option.default, (command, option.name)

    extra = options.Option("wobble", float, 0.25, "a new option", low=0, high=1,
                           cli=(options.ANIMATE, options.EVAL))
    monkeypatch.setattr(options, "OPTIONS", (*options.OPTIONS, extra))
    monkeypatch.setitem(options.BY_NAME, "wobble", extra)
    grown = generator.options_dataclass(options.OPTIONS)
    assert grown().wobble == 0.25
    with pytest.raises(ValueError, match="wobble"):
        grown(wobble=2.0).validate()
    assert options.option_types(options.OPTIONS)["wobble"] is float
    args = cli.build_parser().parse_args(["animate", "a.wav", "--ref", "r", "--out", "o",
                                          "--wobble", "0.5"])
    assert cli._generation_options(args)["wobble"] == 0.5
    assert cli.build_parser().parse_args(["eval", "data"]).wobble == 0.25


def test_the_shared_check_names_the_option():
    from dimitra.backend.protocol.options import validate

    validate({})
    validate({"steps": 100, "lip_sharpen": 1.0, "language": "fr", "bilabials": "pocketsphinx"})
    for bad, name in (({"steps": 0}, "steps"), ({"expressiveness": float("nan")}, "expressiveness"),
                      ({"head_motion": 5.5}, "head_motion"), ({"lip_sharpen": -0.1}, "lip_sharpen"),
                      ({"bilabials": "mfa"}, "bilabials"), ({"language": "French"}, "language"),
                      ({"colour": 1}, "colour")):
        with pytest.raises(ValueError, match=name):
            validate(bad)
        with pytest.raises(ValueError, match=name):
            if name != "colour":
                GenerationOptions(**bad).validate()
            else:
                raise ValueError(name)
