"""`dimitra bake --manifest ... --ray`: lines on real Ray workers (bpy and the model in each),
the same outputs as the single-process bake, crashes and interrupts that cost nothing else."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dimitra.backend.cli import main

# bake --ray as the user runs it: its own process, so Ctrl+C and exit codes are real.
BAKE = [sys.executable, "-m", "dimitra.backend.cli", "bake"]
# The single-process manifest bake (what `dimitra bake --manifest` runs) in its own process,
# left with os._exit: bpy 4.5 can deadlock in its C++ exit handlers (a static destructor of
# bpy's waits on a thread that is gone), and then the process never ends.
ONE_PROCESS = """
import os, sys
from dimitra.blender_addon.bake import bake_manifest
reports = bake_manifest(sys.argv[1], sys.argv[2], progress=False, out_dir=sys.argv[3])
sys.stdout.flush()
os._exit(0 if all(r["status"] == "ok" for r in reports) else 1)
"""


def run_bake(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*BAKE, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)


def partial_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.partial*"))


def finished_takes(folder: Path) -> list[Path]:
    """The .glb outputs written in full (a bake's temp file `.NAME.glb.XXX.partial.glb` ends in
    .glb too, and pathlib's glob matches dot files)."""
    return [p for p in folder.glob("*.glb") if ".partial" not in p.name]


def write_manifest(path: Path, rows: list[tuple]) -> Path:
    """rows of (audio, out) or (audio, out, rig)."""
    header = "audio,out,rig" if any(len(row) == 3 for row in rows) else "audio,out"
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


def test_two_workers_bake_exactly_what_one_process_bakes(sample_rig, speech_lines, tmp_path):
    rows = [(audio, f"{audio.stem}.glb") for audio in speech_lines[:8]]
    manifest = write_manifest(tmp_path / "lines.csv", rows)
    # One thread for the model, as Ray gives each one-CPU worker (OMP_NUM_THREADS=1).
    single = subprocess.run([sys.executable, "-c", ONE_PROCESS, manifest, sample_rig,
                             tmp_path / "one"], capture_output=True, text=True, timeout=300,
                            check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr
    on_ray = run_bake("--rig", sample_rig, "--manifest", manifest, "--out-dir",
                      tmp_path / "ray", "--ray", "local", "--workers", "2")
    assert on_ray.returncode == 0, on_ray.stderr
    assert "8 lines: 8 baked, 0 already there, 0 failed" in on_ray.stdout
    assert "2 Ray workers on 1 node(s)" in on_ray.stdout
    for _, out in rows:
        assert (tmp_path / "ray" / out).read_bytes() == (tmp_path / "one" / out).read_bytes(), out


def test_a_line_that_crashes_its_worker_costs_that_line_only(sample_rig, speech_lines,
                                                             tmp_path):
    from dimitra.backend.scale.bake import BakeWorker, bake_on_ray
    from dimitra.blender_addon.bake_settings import BakeSettings
    from dimitra.blender_addon.manifest import read_manifest

    class KilledOnItsLine(BakeWorker):
        """A line that takes its worker process down (a segfault, the OOM killer)."""

        def bake_line(self, line):
            if line.audio.name == "crash.wav":
                os.kill(os.getpid(), signal.SIGKILL)
            return super().bake_line(line)

    crash = tmp_path / "crash.wav"
    crash.write_bytes(speech_lines[0].read_bytes())
    audios = [speech_lines[1], crash, *speech_lines[2:6]]
    manifest = write_manifest(tmp_path / "lines.csv",
                              [(audio, f"takes/{audio.stem}.glb") for audio in audios])
    run = bake_on_ray(read_manifest(manifest, sample_rig), BakeSettings(), "local", 2,
                      progress=False, worker_class=KilledOnItsLine)
    status = {Path(r["audio"]).name: r for r in run.reports}
    assert status["crash.wav"]["status"] == "failed"
    assert "worker process died" in status["crash.wav"]["error"]
    assert [r["status"] for r in run.reports].count("ok") == 5
    assert sorted(p.name for p in (tmp_path / "takes").iterdir()) == sorted(
        f"{audio.stem}.glb" for audio in audios if audio != crash)
    assert len(run.workers) == 2
    # No worker outlives the run (one stuck in bpy's exit handlers would go on using a core).
    pids = {w["pid"] for w in run.workers} | {int(r["worker"].split(":")[1])
                                              for r in run.reports if "worker" in r}
    deadline = time.monotonic() + 60
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in pids if running(pid)]


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_an_interrupted_run_rerun_finishes_the_rest_and_redoes_nothing(sample_rig, speech_lines,
                                                                       tmp_path):
    outs = tmp_path / "takes"
    manifest = write_manifest(tmp_path / "lines.csv",
                              [(audio, f"{audio.stem}.glb") for audio in speech_lines])
    command = [*BAKE, "--rig", str(sample_rig), "--manifest", str(manifest), "--out-dir",
               str(outs), "--ray", "local", "--workers", "2"]
    # Ctrl+C as at a terminal: a suite started in the background (`make test &`) runs with
    # SIGINT ignored, which children inherit and Python then leaves ignored.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not (outs.is_dir() and finished_takes(outs)) and process.poll() is None:
        assert time.monotonic() < deadline, "no line baked"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)   # Ctrl+C
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "run the same command again" in stderr
    first = {p.name: p.stat().st_mtime_ns for p in finished_takes(outs)}
    assert 1 <= len(first) < len(speech_lines)
    assert partial_files(outs) == []

    again = run_bake(*command[len(BAKE):])
    assert again.returncode == 0, again.stderr
    assert (f"{len(speech_lines)} lines: {len(speech_lines) - len(first)} baked, "
            f"{len(first)} already there, 0 failed") in again.stdout
    assert sorted(p.name for p in outs.glob("*.glb")) == sorted(
        f"{audio.stem}.glb" for audio in speech_lines)
    assert {name: (outs / name).stat().st_mtime_ns for name in first} == first  # not redone
    assert partial_files(outs) == []


def test_a_stopped_pool_has_no_worker_still_writing(tmp_path):
    """Ray reports a killed actor dead before its process has exited; the pool waits for the
    process, so nothing a worker was writing changes after stop() (the Ctrl+C clean-up relies
    on it)."""
    from dimitra.backend.scale.bake import _Pool
    from dimitra.backend.scale.cluster import connect, import_ray

    class Scribbler:
        """Rewrites one file as fast as it can, as a worker exporting a take would."""

        def __init__(self, folder):
            self.file = Path(folder) / "scribbled.txt"

        def describe(self):
            import socket
            return {"host": socket.gethostname(), "pid": os.getpid(), "load_seconds": 0.0}

        def scribble(self):
            count = 0
            while True:
                count += 1
                self.file.write_text(str(count))

    ray = import_ray()
    with connect("local", local_cpus=1):
        pool = _Pool(ray, Scribbler, str(tmp_path), 1)
        scribbling = pool.workers[0].scribble.remote()
        while not (tmp_path / "scribbled.txt").exists():
            ended, _ = ray.wait([scribbling], timeout=0.01)
            if ended:
                ray.get(scribbling)   # the worker failed: raises its error
            assert not ended, "the worker stopped before writing"
        pid = pool.described[0]["pid"]
        pool.stop()
        assert not running(pid)
        last = (tmp_path / "scribbled.txt").stat().st_mtime_ns
        time.sleep(0.5)
        assert (tmp_path / "scribbled.txt").stat().st_mtime_ns == last


@pytest.fixture
def ray_head(tmp_path):
    """A real `ray start --head` on a free port, stopped at the end."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray = Path(sys.executable).parent / "ray"
    started = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2",
                              "--include-dashboard=false", "--disable-usage-stats",
                              "--node-ip-address=127.0.0.1"],
                             capture_output=True, text=True, timeout=120, check=False)
    assert started.returncode == 0, started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, check=False)


def test_a_running_cluster_by_address(sample_rig, speech_lines, tmp_path, ray_head):
    rows = [(audio, f"{audio.stem}.blend") for audio in speech_lines[:3]]
    manifest = write_manifest(tmp_path / "lines.csv", rows)
    run = run_bake("--rig", sample_rig, "--manifest", manifest, "--ray", ray_head,
                   "--workers", "2")
    assert run.returncode == 0, run.stderr
    assert "3 lines: 3 baked" in run.stdout and "2 Ray workers" in run.stdout
    assert all((tmp_path / out).is_file() for _, out in rows)


def test_mixed_rigs_in_one_manifest(sample_rig, speech_lines, tmp_path):
    """The `rig` column: each line on its own character (here the sample rig as .blend and as
    .glb, which a worker opens and fits separately)."""
    glb_rig = tmp_path / "sample_face.glb"
    subprocess.run([sys.executable, "-c", (
        "import os, sys, bpy; bpy.ops.wm.open_mainfile(filepath=sys.argv[1]); "
        "bpy.ops.export_scene.gltf(filepath=sys.argv[2], export_format='GLB', export_morph=True); "
        "os._exit(0)"),
        str(sample_rig), str(glb_rig)], check=True, capture_output=True, timeout=120)
    garbled = tmp_path / "garbled.wav"
    garbled.write_bytes(b"RIFF" + bytes(range(256)) * 40)
    manifest = write_manifest(tmp_path / "lines.csv", [
        (speech_lines[0], "a.glb", sample_rig), (speech_lines[1], "b.glb", glb_rig),
        (garbled, "bad.glb", ""), (speech_lines[2], "c.glb", "")])
    run = run_bake("--rig", sample_rig, "--manifest", manifest, "--ray", "local",
                   "--workers", "2")
    assert run.returncode == 1, run.stderr
    assert "4 lines: 3 baked, 0 already there, 1 failed" in run.stdout
    last = run.stdout.strip().splitlines()[-1]   # failed lines are listed again at the end
    assert last.startswith(f"  failed line 4 ({garbled}): ") and "garbled.wav" in last
    assert sorted(p.name for p in tmp_path.glob("*.glb")) == ["a.glb", "b.glb", "c.glb",
                                                             "sample_face.glb"]


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line naming it, exit 2, nothing written, no Ray started
# ---------------------------------------------------------------------------------------------

def test_a_manifest_with_missing_audio_is_refused_whole(sample_rig, speech_lines, tmp_path,
                                                        capsys):
    manifest = write_manifest(tmp_path / "lines.csv", [(speech_lines[0], "a.glb"),
                                                       ("gone.wav", "b.glb")])
    code = main(["bake", "--rig", str(sample_rig), "--manifest", str(manifest),
                 "--ray", "local"])
    error = capsys.readouterr().err
    assert code == 2
    assert "line 3: audio" in error and "gone.wav" in error and "nothing was baked" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.csv"]


def test_an_unreachable_ray_address_is_named(sample_rig, speech_lines, tmp_path, capsys):
    import socket

    with socket.socket() as probe:   # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manifest = write_manifest(tmp_path / "lines.csv", [(speech_lines[0], "a.glb")])
    code = main(["bake", "--rig", str(sample_rig), "--manifest", str(manifest),
                 "--ray", f"127.0.0.1:{port}"])
    error = capsys.readouterr().err
    assert code == 2
    assert f"--ray 127.0.0.1:{port}: no Ray cluster answers there" in error
    assert "ray start --head" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.csv"]


def test_an_out_dir_that_is_a_file_is_named(sample_rig, speech_lines, tmp_path, capsys):
    taken = tmp_path / "takes"
    taken.write_text("not a folder")
    manifest = write_manifest(tmp_path / "lines.csv", [(speech_lines[0], "a.glb")])
    code = main(["bake", "--rig", str(sample_rig), "--manifest", str(manifest),
                 "--out-dir", str(taken), "--ray", "local"])
    error = capsys.readouterr().err
    assert code == 2
    assert f"--out-dir {taken} is a file" in error
    assert taken.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lines.csv", "takes"]
