"""The sidebar panel (3D Viewport > Sidebar > Dimitra)."""

import bpy

from . import generate_job, preferences
from .operators import off_this_machine
from .properties import PANEL_OPTIONS, STRENGTH_REGIONS


class DIMITRA_PT_generate(bpy.types.Panel):
    bl_label = "Dimitra"
    bl_idname = "DIMITRA_PT_generate"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Dimitra"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.dimitra
        layout.use_property_split = True
        layout.use_property_decorate = False

        column = layout.column(heading="Target")
        column.prop(settings, "mesh")
        column.prop(settings, "armature")

        column = layout.column(heading="Audio")
        column.prop(settings, "audio_source", expand=True)
        if settings.audio_source == "STRIP":
            editor = context.scene.sequence_editor
            if editor is not None:
                strips = "strips" if hasattr(editor, "strips") else "sequences"
                column.prop_search(settings, "audio_strip", editor, strips)
            else:
                column.label(text="No sequencer strips yet", icon="INFO")
            column.prop(settings, "use_strip_start")
            if not settings.use_strip_start:
                column.prop(settings, "start_frame")
        else:
            column.prop(settings, "audio_file")
            column.prop(settings, "start_frame")

        prefs = preferences.addon_preferences(context)
        if prefs is not None:
            column = layout.column(heading="Backend")
            column.prop(prefs, "backend", expand=True)
            if prefs.backend == "LOCAL":
                column.prop(prefs, "python")
            elif prefs.backend == "REMOTE":
                column.prop(prefs, "address")
                if not bpy.app.online_access and off_this_machine(prefs.address):
                    column.label(text="Online access is off: Preferences > System > Network",
                                 icon="ERROR")

        column = layout.column(heading="Motion")
        for name in PANEL_OPTIONS:
            column.prop(settings, name)
        column.prop(settings, "keys")

        column = layout.column(heading="Strength")   # Re-solve changes these
        column.prop(settings, "strength")
        for name in STRENGTH_REGIONS:
            column.prop(settings, name)
        column.prop(settings, "smoothing")

        job = generate_job.active_job()
        wm = context.window_manager
        if job is not None and not job.finished:
            row = layout.row(align=True)
            row.progress(factor=job.fraction, type="BAR", text=job.stage.capitalize())
            row.operator("dimitra.cancel", text="", icon="CANCEL")
        else:
            layout.operator("dimitra.generate", icon="PLAY")
            if wm.dimitra_stage:
                layout.label(text=wm.dimitra_stage)
        row = layout.row(align=True)
        row.operator("dimitra.resolve", icon="FILE_REFRESH")
        row.operator("dimitra.show_landmarks", icon="POINTCLOUD_DATA")
        layout.operator("dimitra.export_fbx", icon="EXPORT")


CLASSES = (DIMITRA_PT_generate,)
