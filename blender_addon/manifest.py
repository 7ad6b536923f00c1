"""The bake manifest (docs/FORMATS.md): one line to bake per CSV row.

Columns `audio` and `out`, and optionally `rig` (the line's own character; else --rig). Relative
paths are taken from the CSV's folder, `out` from --out-dir when given. No bpy here: a Ray driver
(backend/scale) reads the manifest without Blender.
"""

import csv
from dataclasses import dataclass
from pathlib import Path


class ManifestError(ValueError):
    """A manifest, or an option that goes with it, that cannot be baked; the message names it."""


@dataclass(frozen=True)
class ManifestLine:
    number: int     # the CSV's line number (the header is line 1), as the reports name it
    audio: Path
    out: Path
    rig: Path


def read_manifest(manifest: str | Path, rig: str | Path | None = None,
                  out_dir: str | Path | None = None) -> list[ManifestLine]:
    """Every line of `manifest`; `rig` stands for an empty or missing `rig` column."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"--manifest {manifest}: no such file")
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ManifestError(f"--out-dir {out_dir} is a file; give a folder (it is made if "
                            "missing)")
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"audio", "out"} <= set(rows[0]):
        raise ManifestError(f"--manifest {manifest}: a CSV with a header row naming the columns "
                            "'audio' and 'out' (and optionally 'rig'), one line to bake per row")
    base = manifest.parent
    out_base = base if out_dir is None else Path(out_dir)
    lines = []
    for number, row in enumerate(rows, start=2):
        line_rig = (row.get("rig") or "").strip()
        if not line_rig and rig is None:
            raise ManifestError(f"--manifest {manifest}: line {number} names no rig; fill its "
                                "'rig' column or give --rig for such lines")
        lines.append(ManifestLine(number, base / row["audio"].strip(),
                                  out_base / row["out"].strip(),
                                  base / line_rig if line_rig else Path(rig)))
    return lines


def missing_inputs(lines: list[ManifestLine]) -> list[str]:
    """'line N: audio|rig PATH' for every input file that is not there."""
    return [f"line {line.number}: {kind} {path}" for line in lines
            for kind, path in (("audio", line.audio), ("rig", line.rig)) if not path.is_file()]
