"""What a user sees when `dimitra` is given bad input: one line on stderr that names the input
and says what to do, a non-zero exit status, and the Python traceback only with --debug."""

import socket
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from dimitra.backend import cli
from dimitra.backend.demo import REFERENCE_IMAGE
from dimitra.backend.model.checkpoint import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[2]
# MediaPipe's C++ start-up chatter on fd 2 (absl and TFLite logging, which GLOG_minloglevel no
# longer quiets): not ours to word, so not counted.
LIBRARY_CHATTER = ("INFO: Created TensorFlow Lite", "WARNING: All log messages before absl",
                   "W0000 ", "I0000 ")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("inputs")
    tone = folder / "tone.wav"   # 1 s of a 220 Hz tone: a readable audio file
    samples = (0.2 * np.sin(2 * np.pi * 220 * np.arange(16_000) / 16_000) * 32767).astype("<i2")
    with wave.open(str(tone), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16_000)
        handle.writeframes(samples.tobytes())
    garbage = folder / "garbage.wav"
    garbage.write_bytes(b"this is not audio " * 20)
    grey = folder / "grey.png"
    Image.new("RGB", (256, 256), (128, 128, 128)).save(grey)
    return {"tone": tone, "garbage": garbage, "grey": grey, "missing": folder / "missing.wav",
            "nodata": folder / "no-dataset", "novideo": folder / "no-video.mp4",
            "out": folder / "out"}


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def animate(i, audio, *options, ref=None):
    return ["animate", str(audio), "--ref", str(ref or REFERENCE_IMAGE),
            "--out", str(i["out"] / "motion.npz"), *options]


SERVER = free_address()   # nothing listens there

# case: inputs -> (argv, what the line must name). Run in this process: `main` returns the exit
# status, and capfd sees what C libraries write to the file descriptors too.
CASES = {
    "animate-missing-audio": lambda i: (animate(i, i["missing"]), "missing.wav"),
    "animate-unreadable-audio": lambda i: (animate(i, i["garbage"]), "garbage.wav"),
    "animate-no-face": lambda i: (animate(i, i["tone"], ref=i["grey"]), "grey.png"),
    "animate-steps-out-of-range": lambda i: (animate(i, i["tone"], "--steps", "0"), "steps"),
    "animate-expressiveness-out-of-range": lambda i: (
        animate(i, i["tone"], "--expressiveness", "9"), "expressiveness"),
    "animate-missing-model": lambda i: (
        animate(i, i["tone"], "--model", str(i["out"] / "none.safetensors")),
        "none.safetensors"),
    "eval-missing-dataset": lambda i: (["eval", str(i["nodata"])], "no-dataset"),
    "eval-not-a-dataset": lambda i: (["eval", str(i["tone"].parent)], str(i["tone"].parent)),
    "prepare-missing-input": lambda i: (
        ["prepare", str(i["novideo"]), "--out", str(i["out"] / "dataset"), "--quiet"],
        "no-video.mp4"),
    "train-missing-dataset": lambda i: (
        ["train", str(i["nodata"]), "--out", str(i["out"] / "run")], "no-dataset"),
    "client-info-no-server": lambda i: (
        ["client", "info", "--server", SERVER, "--timeout", "0.3"], SERVER),
    "client-animate-no-server": lambda i: (
        ["client", "animate", str(i["tone"]), "--ref", str(REFERENCE_IMAGE),
         "--out", str(i["out"] / "remote.npz"), "--quiet", "--server", SERVER,
         "--timeout", "0.3"], SERVER),
}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not line.startswith(LIBRARY_CHATTER)]


def assert_one_line(status: int, stderr: str, command: str, names: str) -> str:
    lines = error_lines(stderr)
    assert status == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"dimitra {command}: "), lines[0]
    assert names in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gets_one_line_and_status_2(case, inputs, capfd):
    if case.startswith("animate") and not DEFAULT_MODEL.is_file():
        pytest.skip("no shipped model")
    argv, names = CASES[case](inputs)
    status = cli.main(argv)
    out, err = capfd.readouterr()
    assert_one_line(status, err, argv[0], names)
    assert out == ""
    assert not (inputs["out"] / "dataset").exists()   # refused up front: no empty dataset
    assert not (inputs["out"] / "run").exists()       # or run folder is left behind


@pytest.mark.parametrize("case", CASES)
def test_debug_shows_the_error_itself(case, inputs, capfd):
    """With --debug nothing is caught: the exception (and so the traceback) reaches the user."""
    if case.startswith("animate") and not DEFAULT_MODEL.is_file():
        pytest.skip("no shipped model")
    argv, _ = CASES[case](inputs)
    with pytest.raises(Exception):  # noqa: B017 - each case raises its own kind; none is caught
        cli.main(["--debug", *argv])


def run_dimitra(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dimitra.backend.cli", *argv], capture_output=True,
                          text=True, cwd=REPO, timeout=120, check=False)


def test_a_user_at_the_shell_sees_one_line_and_with_debug_the_traceback(inputs):
    argv = animate(inputs, inputs["missing"])
    plain = run_dimitra(*argv)
    line = assert_one_line(plain.returncode, plain.stderr, "animate", str(inputs["missing"]))
    assert "check the path" in line
    debug = run_dimitra(*argv, "--debug")   # at the end of the line, where a user adds it
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "AudioError" in debug.stderr


def test_bake_with_a_missing_rig(inputs):
    """bpy runs in its own process here, as in a batch bake."""
    rig = inputs["out"] / "no-rig.blend"
    argv = ["bake", str(inputs["tone"]), "--rig", str(rig), "--out", str(inputs["out"] / "b.blend")]
    plain = run_dimitra(*argv)
    assert_one_line(plain.returncode, plain.stderr, "bake", str(rig))
    debug = run_dimitra("--debug", *argv)
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr


def test_options_that_do_not_go_together_get_one_line(capfd):
    assert cli.main(["eval", "--pred", "a.npz"]) == 2
    assert error_lines(capfd.readouterr().err) == [
        "dimitra eval: --pred needs --truth (a prepared clip .npz)"]


def test_an_unexpected_error_says_so_in_one_line(monkeypatch, capfd):
    """A library's error (here numpy's) is no sentence for the user: one line that calls it
    unexpected and points to --debug, status 1; --debug shows it whole."""
    monkeypatch.setattr(cli, "_eval", lambda args: np.concatenate([]))
    assert cli.main(["eval", "data"]) == 1
    lines = error_lines(capfd.readouterr().err)
    assert len(lines) == 1
    assert lines[0].startswith("dimitra eval: unexpected error: ValueError: need at least one")
    assert "--debug" in lines[0]
    with pytest.raises(ValueError, match="need at least one array"):
        cli.main(["eval", "data", "--debug"])

    def bug(args):
        return {}["missing key"]

    monkeypatch.setattr(cli, "_eval", bug)
    assert cli.main(["eval", "data"]) == 1
    assert "unexpected error: KeyError" in capfd.readouterr().err

    # A builtin's ValueError in the project's own code is no sentence for the user either: only
    # a `raise` line of the project's is. (A function compiled as if it were in backend/cli.py.)
    scope = {}
    exec(compile("def parse(args):\n    return int('twelve')\n", cli.__file__, "exec"), scope)
    monkeypatch.setattr(cli, "_eval", scope["parse"])
    assert cli.main(["eval", "data"]) == 1
    assert "unexpected error: ValueError: invalid literal" in capfd.readouterr().err


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capfd):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_eval", interrupted)
    try:
        status = cli.main(["eval", "data"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C reached the user as a traceback")
    assert status == 130
    assert error_lines(capfd.readouterr().err) == ["", "dimitra eval: interrupted"]
