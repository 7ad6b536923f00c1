"""`make bench`: every benchmark, results printed as JSON and saved to .bench_cache/latest.json.

Record the figures in docs/BENCHMARKS.md with the commit and this command.
"""

import json
import subprocess

from tests.benchmarks import (
    bench_addon,
    bench_animate,
    bench_prepare,
    bench_render,
    bench_retarget,
    bench_scale,
    bench_service,
)
from tests.benchmarks.bench_prepare import CACHE


def main() -> None:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, check=False,
                            text=True).stdout.strip()
    results = {"commit": commit, "animate": bench_animate.main(), "prepare": bench_prepare.main(),
               "service": bench_service.main(), "retarget": bench_retarget.main(),
               "addon": bench_addon.main(), "scale": bench_scale.main(),
               "render": bench_render.main()}
    CACHE.mkdir(exist_ok=True)
    (CACHE / "latest.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
