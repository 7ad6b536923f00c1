"""Markdown table of a prepared dataset: per-clip coverage and totals per split.

    python -m dimitra.backend.dataset.data_report DATASET
"""

import argparse
from collections import defaultdict

from .index import load_index
from .tracks import MODEL_FPS


def data_report(dataset) -> str:
    clips = load_index(dataset)
    lines = [("| clip | split | speaker | source fps | source frames | tracked | segments | "
              "frames at 25 fps | seconds | faces seen | status |"),
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    totals = defaultdict(lambda: defaultdict(float))
    for c in clips:
        status = "ok" if c.status == "ok" else f"failed: {c.error}"
        lines.append(f"| {c.clip_id} | {c.split} | {c.speaker} | {c.source_fps:.2f} | "
                     f"{c.source_frames} | {c.coverage:.1%} | {len(c.segments)} | {c.frames} | "
                     f"{c.frames / MODEL_FPS:.1f} | {c.faces_seen} | {status} |")
        for key in (c.split, "total"):
            t = totals[key]
            t["clips"] += 1
            t["ok"] += c.status == "ok"
            t["source_frames"] += c.source_frames
            t["tracked_frames"] += c.tracked_frames
            t["frames"] += c.frames
    lines += ["", "| split | clips | prepared | source frames | tracked | frames at 25 fps | seconds |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for key in sorted(totals, key=lambda k: (k == "total", k)):
        t = totals[key]
        lines.append(f"| {key} | {t['clips']:.0f} | {t['ok']:.0f} | {t['source_frames']:.0f} | "
                     f"{t['tracked_frames'] / max(t['source_frames'], 1):.1%} | {t['frames']:.0f} | "
                     f"{t['frames'] / MODEL_FPS:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    print(data_report(parser.parse_args().dataset))


if __name__ == "__main__":
    main()
