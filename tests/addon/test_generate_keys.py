"""Generate's Shape keys setting on a face with ARKit and viseme keys (a Ready Player Me-like
avatar): one set animates the mouth, the other stays at 0."""

import numpy as np
import pytest

from dimitra.retarget.curves import VISEME_MIXES
from tests.addon.conftest import curve_values

pytestmark = pytest.mark.timeout(300)


def add_visemes(face) -> None:
    """The 15 viseme keys beside the sample face's 52 ARKit keys, made from them."""
    blocks = face.data.shape_keys.key_blocks
    count = len(face.data.vertices)
    basis = np.empty(3 * count, dtype=np.float32)
    blocks[0].data.foreach_get("co", basis)
    for name, mix in VISEME_MIXES.items():
        co = basis.copy()
        for source, weight in mix.items():
            shape = np.empty_like(basis)
            blocks[source].data.foreach_get("co", shape)
            co += weight * (shape - basis)
        face.shape_key_add(name=name, from_mix=False).data.foreach_set("co", co)


def take(server, audio, keys: str | None):
    import bpy

    settings = {} if keys is None else {"keys": keys}
    assert bpy.ops.dimitra.generate(audio_file=str(audio), server=server,
                                    **settings) == {"FINISHED"}
    action = bpy.data.objects["sample_face"].data.shape_keys.animation_data.action
    return {name: curve_values(action, f'key_blocks["{name}"].value')[1]
            for name in ("jawOpen", "mouthLowerDownLeft", *VISEME_MIXES)}


def test_auto_animates_arkit_and_visemes_on_request(rig, server, speech_file):
    import bpy

    add_visemes(rig["face"])
    assert bpy.context.scene.dimitra.keys == "auto"
    arkit = take(server, speech_file, None)
    assert arkit["jawOpen"].max() > 0.15                  # the jaw opens through jawOpen
    assert all(np.all(arkit[name] == 0) for name in VISEME_MIXES)
    visemes = take(server, speech_file, "visemes")
    assert np.all(visemes["jawOpen"] == 0) and np.all(visemes["mouthLowerDownLeft"] == 0)
    assert max(visemes[name].max() for name in VISEME_MIXES if name != "viseme_sil") > 0.15
