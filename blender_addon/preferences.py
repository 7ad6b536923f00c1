"""The add-on's preferences: where the backend is (built in, a local Python's, or a remote
server)."""

from pathlib import Path

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from ..backend.protocol.client import CurveKeys
from ..backend.protocol.constants import DEFAULT_SERVER
from .generate_job import Backend
from .scene_inputs import InputError

DEFAULT_PORT = 5599    # not the server's own default (5555), so a hand-started one is not hit
# The add-on's module: the extension's root (`bl_ext.user_default.dimitra`), one above this
# package, whose __init__ registers it.
ADDON_ID = __package__.rpartition(".")[0]


class DimitraPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend: EnumProperty(
        name="Backend", default="BUILTIN",
        items=[("BUILTIN", "Built-in", "Run the model shipped with the add-on in a worker "
                                       "process of Blender's own Python (CPU; nothing to install)"),
               ("LOCAL", "Local (your Python)", "Start a backend on this machine from the Python "
                                               "below (e.g. one with a GPU's torch)"),
               ("REMOTE", "Remote", "Use a running `dimitra serve` at the address below")])
    python: StringProperty(
        name="Local backend Python", subtype="FILE_PATH",
        description="The Python that has Dimitra installed (e.g. .venv/bin/python); the "
                    "add-on runs `python -m dimitra.backend.cli serve` with it")
    port: IntProperty(name="Local port", default=DEFAULT_PORT, min=1024, max=65535)
    address: StringProperty(name="Server address", default=DEFAULT_SERVER,
                            description="tcp://HOST:PORT of a running `dimitra serve`")
    server_key: StringProperty(name="Server public key", subtype="FILE_PATH",
                               description="CurveZMQ: the server's `server.key` (optional)")
    client_key: StringProperty(name="Client secret key", subtype="FILE_PATH",
                               description="CurveZMQ: this machine's `NAME.key_secret`")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "backend", expand=True)
        if self.backend == "BUILTIN":
            layout.label(text="The shipped model runs on the CPU in a worker process.")
        elif self.backend == "LOCAL":
            layout.prop(self, "python")
            layout.prop(self, "port")
        else:
            layout.prop(self, "address")
            layout.prop(self, "server_key")
            layout.prop(self, "client_key")


def addon_preferences(context=None):
    """The preferences, or None when the add-on runs unregistered (the repo's tests)."""
    addon = (context or bpy.context).preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def backend_for(server: str, server_key: str, client_key: str, context=None) -> Backend:
    """The backend a job uses: `server` when given (with its CurveZMQ key files), else the
    preferences'."""
    prefs = addon_preferences(context)
    if not server and prefs is not None:
        if prefs.backend == "BUILTIN":
            return Backend(builtin=True)
        if prefs.backend == "LOCAL":
            return Backend(local_python=bpy.path.abspath(prefs.python), local_port=prefs.port)
        server, server_key, client_key = prefs.address, prefs.server_key, prefs.client_key
    if not server:
        raise InputError("no backend: set one in Preferences > Add-ons > Dimitra (Built-in, a "
                         "local Python or a server address), or pass server='tcp://HOST:PORT'")
    return Backend(address=server, curve=curve_keys(server_key, client_key))


def curve_keys(server_key: str, client_key: str) -> CurveKeys | None:
    if not server_key and not client_key:
        return None
    if not (server_key and client_key):
        raise InputError("CurveZMQ needs both key files: the server's public `server.key` "
                         "and this machine's `NAME.key_secret`")
    for name, path in (("server key", server_key), ("client key", client_key)):
        if not Path(bpy.path.abspath(path)).is_file():
            raise InputError(f"{name} {path}: no such file")
    return CurveKeys(bpy.path.abspath(server_key), bpy.path.abspath(client_key))
