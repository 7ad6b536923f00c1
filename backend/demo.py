"""`make demo`: the newest working piece, end to end, on the bundled samples.

Runs `dimitra animate` on the bundled speech and reference photo with the shipped model and
writes the motion file and a preview video; then `dimitra bake` of the same speech onto the
generated sample rig, written as .blend and .fbx, with a preview video rendered from the rig
(Workbench) with the speech. `synthesize_talking_clip` (a talking clip with
known jaw and head motion, made from the same samples) serves the tests of `prepare`.

The console shows one progress bar per stage and the summary: what Blender and the libraries
print (a line per rendered frame, start-up chatter) is kept aside, and shown only when a stage
fails.
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
REFERENCE_IMAGE = SAMPLES / "reference_face.jpg"
SPEECH = SAMPLES / "speech_en.flac"
FPS = 25


def synthesize_talking_clip(out_path: Path, seconds: float | None = None) -> dict:
    """Write an MP4 (H.264 + AAC) of the reference photo speaking the bundled sample.

    Returns the motion that was put in: per frame jaw drop (pixels) and roll (radians).
    """
    import cv2
    from PIL import Image

    from ..retarget.face import topology
    from .media.audio import frame_rms_db, load_audio
    from .media.video import write_video
    from .tracking.face_tracker import FaceTracker

    image = np.asarray(Image.open(REFERENCE_IMAGE).convert("RGB"))
    speech = load_audio(SPEECH)
    if seconds:
        speech = speech[: int(seconds * 16_000)]
    loudness = frame_rms_db(speech, FPS)
    frames = len(loudness)
    # Loudness -> jaw drop in [0, 1], smoothed like a real jaw (it cannot snap open).
    opening = np.clip((loudness - np.percentile(loudness, 20)) / 25.0, 0, 1)
    opening = np.convolve(opening, np.ones(3) / 3, mode="same")
    t = np.arange(frames) / FPS
    roll = np.radians(4.0) * np.sin(2 * np.pi * t / 3.1)
    drift = np.stack([6 * np.sin(2 * np.pi * t / 4.3), 3 * np.sin(2 * np.pi * t / 2.7)], 1)

    with FaceTracker() as tracker:
        landmarks = tracker.track(image)
    if landmarks is None:
        raise RuntimeError(f"{REFERENCE_IMAGE}: no face found in the bundled reference")
    height, width = image.shape[:2]
    mouth = landmarks[list(topology.LIPS_INNER), :2].mean(0)
    chin = landmarks[topology.CHIN, :2]
    face_width = np.linalg.norm(landmarks[topology.LEFT_EYE_OUTER, :2] - landmarks[topology.RIGHT_EYE_OUTER, :2])
    # Displacement field of a dropping jaw: below the mouth line, strongest at the lower lip
    # and chin, fading out sideways and toward the neck.
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    below = np.clip((ys - mouth[1]) / (0.08 * face_width), 0, 1)
    sideways = np.exp(-((xs - mouth[0]) / (0.45 * face_width)) ** 2)
    fade = np.clip(1 - (ys - chin[1]) / (0.4 * face_width), 0, 1)
    jaw_field = (below * sideways * fade).astype(np.float32)
    max_drop = 0.12 * face_width
    centre = (float(mouth[0]), float(mouth[1]))

    def frames_of_the_clip():
        for i in range(frames):
            warped = cv2.remap(image, xs, ys - opening[i] * max_drop * jaw_field, cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
            matrix = cv2.getRotationMatrix2D(centre, float(np.degrees(roll[i])), 1.0)
            matrix[:, 2] += drift[i]
            yield cv2.warpAffine(warped, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)

    write_video(out_path, frames_of_the_clip(), FPS, speech)
    # Image roll counter-clockwise by +a (OpenCV, y down) is the head rolling toward its left
    # shoulder: in upright axes that is a rotation of +a about z.
    return {"opening": opening, "roll": roll, "max_drop_px": max_drop}


@contextlib.contextmanager
def stage(name: str, total: int, console):
    """A progress bar on `console` for one stage, yielded; while the stage runs, file
    descriptors 1 and 2 go to a temporary log (Blender renders and MediaPipe log from C, past
    sys.stdout), which is printed only if the stage fails."""
    from tqdm import tqdm

    with tempfile.TemporaryFile() as log, tqdm(
            total=total, desc=f"{name:<20}", file=console, leave=True,
            bar_format="{desc}{percentage:3.0f}%|{bar:30}| {elapsed}") as bar:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        failed = False
        try:
            yield bar
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if failed:
                bar.close()
                log.seek(0)
                sys.stderr.write(f"--- the output of {name!r}, which failed ---\n"
                                 + log.read().decode(errors="replace"))
                sys.stderr.flush()
            else:
                bar.update(total - bar.n)


def reporting_animator(bar, end: int = 100):
    """An Animator as `dimitra animate` and `bake` load it (the same motion), whose progress
    moves `bar` from where it is to `end`."""
    from .generation.animate import Animator

    class ReportingAnimator(Animator):
        def animate(self, request, progress=None):
            start = bar.n

            def report(step: str, fraction: float) -> None:
                bar.set_postfix_str(step, refresh=False)
                bar.update(max(0, round(start + (end - start) * fraction) - bar.n))

            return super().animate(request, progress or report)

    return ReportingAnimator()


def animate_sample(out: Path, console) -> dict:
    """`dimitra animate` of the bundled samples, with a preview: the motion file and video."""
    from ..retarget.motion_file import save_motion
    from .generation.animate import AnimateRequest
    from .generation.preview import render_preview

    motion_path, preview = out / "sample_motion.npz", out / "sample_preview.mp4"
    print(f"dimitra animate {SPEECH.relative_to(SAMPLES.parent)} --ref "
          f"{REFERENCE_IMAGE.relative_to(SAMPLES.parent)} --out {motion_path} --preview {preview}",
          flush=True)
    with stage("generate motion", 100, console) as bar:   # as animate_to_file does
        motion, audio, reference = reporting_animator(bar).animate(
            AnimateRequest(SPEECH, REFERENCE_IMAGE))
        save_motion(motion_path, motion)
    with stage("landmark preview", 1, console):
        render_preview(motion, reference.image, audio, preview, image_size=reference.image_size)
    timing = motion.meta["timing_s"]
    return {"motion_file": str(motion_path), "preview": str(preview),
            "frames": motion.frame_count, "fps": motion.fps,
            "audio_seconds": round(motion.duration_s, 2),
            "features_seconds": timing["features"], "sampling_seconds": timing["sampling"],
            "realtime_factor": round(motion.duration_s / (timing["features"] + timing["sampling"]), 1)}


def bake_sample_rig(out: Path, console=None) -> dict:
    """The bundled speech baked onto the sample rig: .blend, .fbx and a preview video."""
    home = Path(tempfile.gettempdir()) / "dimitra-demo-blender"   # Blender's files, not in $HOME
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(home))
    console = console or sys.stderr
    blend, fbx = out / "sample_face_baked.blend", out / "sample_face_baked.fbx"
    video = out / "sample_face_preview.mp4"
    for previous in (blend, fbx, video):   # this demo's own outputs of an earlier run
        previous.unlink(missing_ok=True)
    with stage("Blender, sample rig", 1, console):
        import bpy

        from ..blender_addon.bake import BakeSettings, bake, export
        from ..blender_addon.preview import render_preview
        from ..blender_addon.sample_rig import sample_rig_path

        rig = sample_rig_path()
    print(f"dimitra bake {SPEECH.relative_to(SAMPLES.parent)} --rig {rig} --out {blend}",
          flush=True)
    with stage("bake onto the rig", 100, console) as bar:
        bar.update(10)   # the rig's face is rendered and found before the motion is generated
        result = bake(SPEECH, rig, blend, BakeSettings(), reporting_animator(bar, 90))
    with stage("export .fbx", 1, console):
        export(fbx)
    scene = bpy.context.scene
    with stage("render rig preview", scene.frame_end - scene.frame_start + 1, console) as bar:
        def frame_written(*_):
            bar.update()

        bpy.app.handlers.render_write.append(frame_written)
        try:
            render_preview(video)
        finally:
            bpy.app.handlers.render_write.remove(frame_written)
    return {"blend": str(blend), "fbx": str(fbx), "rig_preview": str(video),
            "rig_frames": result.frames, "rig_fps": result.fps, "shape_keys": result.shape_keys,
            "bones": result.bones, "correspondence": result.correspondence.method,
            "bake_seconds": round(result.seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_output")
    args = parser.parse_args()
    out = Path(args.out)

    # The bars' own way to the terminal, kept while stages send fd 1 and 2 to their logs.
    with os.fdopen(os.dup(2), "w", buffering=1) as console:
        summary = animate_sample(out, console)
        summary.update(bake_sample_rig(out, console))
    print(json.dumps(summary, indent=1))
    print(f"watch {summary['preview']}: the landmark mesh of the generated motion over the reference, "
          f"with the speech; and {summary['rig_preview']}: the sample rig animated by a bake, "
          f"also in {summary['blend']} and {summary['fbx']}")


if __name__ == "__main__":
    main()
