"""A CTranslate2 Whisper model with its weights quantized to int8 once, ahead of loading.

The shipped Whisper files hold float16 weights; loading them with compute_type="int8" (what
the features were trained with) quantizes every weight matrix at each start, which takes most
of a second, longer than encoding a minute of speech. Written once as int8, in the model file
format CTranslate2's converter writes (`ctranslate2.specs.model_spec`, binary version 6), the
same model loads in a few hundredths of a second and encodes to the same states (tested).

The quantization is the converter's: each weight matrix of a linear or embedding layer (the
2-D variables named `.../weight`) scaled per output row to amax -> 127 and rounded; everything
else is kept as it is, the convolutions' weights too, which the loader keeps in float on a CPU
(quantizing them as the converter does changes the states by up to 2 in 12).

`encoder_only_dir` then writes a copy for encoding alone (the decoder cut down), optionally
with only the encoder's first layers, whose states are what the lips head reads.
"""

import re
import shutil
import struct
from pathlib import Path

import numpy as np

from ...retarget.atomic_file import atomic_path

# CTranslate2's DataType enum order (include/ctranslate2/types.h).
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
NUMPY = {"float32": np.float32, "int8": np.int8, "int16": np.int16, "int32": np.int32,
         "float16": np.float16, "bfloat16": np.uint16}
MARKER = "int8.done"   # written last in a finished folder
EMBEDDING_ROWS_KEPT = 8   # of the decoder's token table, in an encoder-only copy


def int8_model_dir(model_dir: Path, out_dir: Path) -> Path:
    """out_dir, holding model_dir's model with int8 weights (made on the first call)."""
    if (out_dir / MARKER).is_file():
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.is_file() and item.name != "model.bin":
            with atomic_path(out_dir / item.name) as tmp:
                shutil.copyfile(item, tmp)
    header, variables, aliases = read_model(model_dir / "model.bin")
    with atomic_path(out_dir / "model.bin") as tmp:
        write_model(tmp, header, {name: quantize(name, value) for name, value in variables.items()},
                    aliases)
    (out_dir / MARKER).write_text("model.bin quantized to int8 from the float weights beside\n")
    return out_dir


def encoder_only_dir(model_dir: Path, out_dir: Path, encoder_layers: int | None = None) -> Path:
    """out_dir, holding the int8 model of model_dir for encoding only (made on the first call).

    The decoder keeps one layer and a few rows of its embedding table, which CTranslate2 loads
    without checking them against the vocabulary (that happens only when decoding), so
    tiny.en's copy is 10 MB instead of 37 and loads faster; the encoder's states are the same
    bit for bit (tested). With `encoder_layers`, only the encoder's first layers are kept:
    CTranslate2 builds as many layers as the file holds, so the encoder then returns that
    layer's states (through the final layer norm), an intermediate representation that
    carries the mouth better than the last layer's (docs/MODEL_CARD.md, "The lips head")."""
    if (out_dir / MARKER).is_file():
        return out_dir
    if not (model_dir / MARKER).is_file():
        raise ValueError(f"{model_dir}: not an int8 model folder ({MARKER} missing)")
    header, variables, aliases = read_model(model_dir / "model.bin")
    encoder_layer = re.compile(r"encoder/layer_(\d+)/")
    decoder_layer = re.compile(r"decoder/layer_(\d+)/")

    def kept(name: str) -> bool:
        if match := encoder_layer.match(name):
            return encoder_layers is None or int(match.group(1)) < encoder_layers
        return not ((match := decoder_layer.match(name)) and int(match.group(1)) > 0)

    lean = {name: value for name, value in variables.items() if kept(name)}
    def encoder_variables(names) -> int:
        return sum(bool(encoder_layer.match(name)) for name in names)

    if encoder_layers is not None and encoder_variables(lean) == encoder_variables(variables):
        raise ValueError(f"{model_dir}: the encoder has no more than {encoder_layers} layers")
    for name in ("decoder/embeddings/weight", "decoder/embeddings/weight_scale"):
        if name in lean:
            dtype, array = lean[name]
            lean[name] = (dtype, np.ascontiguousarray(array[:EMBEDDING_ROWS_KEPT]))
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.is_file() and item.name not in ("model.bin", MARKER):
            with atomic_path(out_dir / item.name) as tmp:
                shutil.copyfile(item, tmp)
    with atomic_path(out_dir / "model.bin") as tmp:
        write_model(tmp, header, lean, [(alias, name) for alias, name in aliases if name in lean])
    layers = "all the" if encoder_layers is None else f"the first {encoder_layers}"
    (out_dir / MARKER).write_text(f"int8, {layers} encoder layers of {model_dir.name}, for "
                                  f"encoding only\n")
    return out_dir


def quantize(name: str, value: tuple[str, np.ndarray]) -> tuple[str, np.ndarray] | list:
    """(dtype, array) -> the same, or for a weight matrix [(int8 weight), (float32 scale)]."""
    dtype, array = value
    if not name.endswith("/weight") or array.ndim != 2 or dtype not in ("float32", "float16"):
        return value
    matrix = array.astype(np.float32)
    amax = np.abs(matrix).max(axis=1)
    amax[amax == 0] = 127.0
    amax = np.maximum(amax, np.float32(127) / np.finfo(np.float32).max)
    scale = (127.0 / amax).astype(np.float32)
    weight = np.rint(matrix * scale[:, None]).astype(np.int8)
    return [("int8", weight), ("float32", scale)]


def read_model(path: Path) -> tuple[tuple[int, str, int], dict, list[tuple[str, str]]]:
    """model.bin -> ((version, spec name, revision), {name: (dtype, array)}, [(alias, name)])."""
    data = memoryview(path.read_bytes())
    at = 0

    def take(fmt: str):
        nonlocal at
        values = struct.unpack_from(fmt, data, at)
        at += struct.calcsize(fmt)
        return values[0]

    def string() -> str:
        nonlocal at
        length = take("H")
        text = bytes(data[at:at + length - 1]).decode("utf-8")
        at += length
        return text

    version = take("I")
    if version != 6:
        raise ValueError(f"{path}: CTranslate2 model format {version}, expected 6")
    header = (version, string(), take("I"))
    variables = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype = DTYPES[take("B")]
        size = take("I")
        array = np.frombuffer(data[at:at + size], dtype=NUMPY[dtype]).reshape(shape)
        at += size
        variables[name] = (dtype, array)
    aliases = [(string(), string()) for _ in range(take("I"))]
    if at != len(data):
        raise ValueError(f"{path}: {len(data) - at} unread bytes after the model")
    return header, variables, aliases


def write_model(path: Path, header: tuple[int, str, int], variables: dict,
                aliases: list[tuple[str, str]]) -> None:
    """The inverse of `read_model`; a value may be [(weight), (scale)] (see `quantize`)."""
    flat = []
    for name, value in variables.items():
        if isinstance(value, list):
            (weight_dtype, weight), (scale_dtype, scale) = value
            flat += [(name, weight_dtype, weight), (name + "_scale", scale_dtype, scale)]
        else:
            flat.append((name, *value))
    version, spec, revision = header
    with open(path, "wb") as out:
        def string(text: str) -> None:
            out.write(struct.pack("H", len(text) + 1) + text.encode("utf-8") + b"\0")

        out.write(struct.pack("I", version))
        string(spec)
        out.write(struct.pack("I", revision))
        out.write(struct.pack("I", len(flat)))
        for name, dtype, array in flat:
            string(name)
            out.write(struct.pack("B", array.ndim))
            for dim in array.shape:
                out.write(struct.pack("I", dim))
            out.write(struct.pack("B", DTYPES.index(dtype)))
            raw = np.ascontiguousarray(array).tobytes()
            out.write(struct.pack("I", len(raw)))
            out.write(raw)
        out.write(struct.pack("I", len(aliases)))
        for alias, name in aliases:
            string(alias)
            string(name)
