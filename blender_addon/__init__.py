"""Dimitra for Blender: speech audio in, an animated face rig out.

The Blender extension (id `dimitra`, built by build_addon.py). The same package serves batch
tools from the repository (`blender_addon.bake`); importing it registers nothing.
Layout: scene_inputs (what a Generate reads), generate_job (the background job and its
ticks), key_writer (keys into new Actions, all or nothing), local_backend (a `dimitra serve`
started on this machine), landmark_points, operators, panel, preferences, properties,
saved_takes (a take's motion kept in the .blend), blender_api (Blender version differences),
rig_reader, reference_view (the reference render and its camera), bake (shared with batch
baking) and render_comparison (the rig's take beside the photoreal one).
"""


def _modules():
    from . import operators, panel, preferences, properties

    return properties, preferences, operators, panel


def register() -> None:
    import bpy

    properties, preferences, operators, panel = _modules()
    from . import saved_takes

    properties.register()
    for cls in (preferences.DimitraPreferences, *operators.CLASSES, *panel.CLASSES):
        bpy.utils.register_class(cls)
    operators.register_menus()
    saved_takes.register()
    from . import render_comparison

    render_comparison.register()


def unregister() -> None:
    import bpy

    from . import generate_job, local_backend, saved_takes

    generate_job.stop_all()       # a timer left registered hangs Blender at exit
    local_backend.stop()
    saved_takes.unregister()
    from . import render_comparison

    render_comparison.unregister()
    properties, preferences, operators, panel = _modules()
    operators.unregister_menus()
    for cls in reversed((preferences.DimitraPreferences, *operators.CLASSES, *panel.CLASSES)):
        bpy.utils.unregister_class(cls)
    properties.unregister()
