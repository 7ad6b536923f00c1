"""A preview video of a baked rig: Workbench from the scene's camera, with the sound strip."""

from pathlib import Path

import bpy

from ..retarget.atomic_file import atomic_path
from . import blender_api
from .scene_state import temporarily


def render_preview(out: str | Path, size: int = 384) -> Path:
    """Render the open scene's frame range to `out` (.mp4), atomically; settings are restored."""
    out = Path(out)
    scene = bpy.context.scene
    if scene.camera is None:
        raise ValueError(f"{out}: the scene has no camera to render the preview from; add one")
    render, image = scene.render, scene.render.image_settings
    ffmpeg = render.ffmpeg
    # Restored in reverse order: the media type (5.0), then the format, then its colour mode.
    kept = [(image, name, getattr(image, name)) for name in ("color_mode", "file_format")]
    kept += [(image, "media_type", image.media_type)] if hasattr(image, "media_type") else []
    kept += [(ffmpeg, name, getattr(ffmpeg, name))
             for name in ("format", "codec", "audio_codec", "constant_rate_factor")]
    with atomic_path(out, keep_suffix=True) as tmp, temporarily(kept), temporarily([
            (render, "engine", "BLENDER_WORKBENCH"), (render, "resolution_x", size),
            (render, "resolution_y", size), (render, "resolution_percentage", 100),
            (scene.display, "render_aa", "FXAA"), (render, "filepath", str(tmp))]):
        blender_api.set_video_output(scene)
        bpy.ops.render.render(animation=True)
    return out
