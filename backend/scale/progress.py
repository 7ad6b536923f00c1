"""The bar of a batch run over lines (or clips): done, failed, per minute, ETA (on stderr)."""

import sys
import time


class BatchProgress:
    def __init__(self, total: int, already_done: int, unit: str, desc: str, enabled: bool = True):
        from tqdm import tqdm

        self.unit, self.finished, self.failed = unit, 0, 0   # in this run
        self.started = time.monotonic()
        self.bar = tqdm(total=total, initial=already_done, disable=not enabled, file=sys.stderr,
                        bar_format="{desc} {n_fmt}/{total_fmt} " + unit + "s |{bar}|{postfix}, "
                                   "ETA {remaining}", desc=desc)
        self._show()

    def update(self, failed: bool = False) -> None:
        self.finished += 1
        self.failed += failed
        self.bar.update()
        self._show()

    def per_minute(self) -> float:
        return 60.0 * self.finished / max(time.monotonic() - self.started, 1e-9)

    def close(self) -> None:
        self.bar.close()

    def _show(self) -> None:
        self.bar.set_postfix_str(f"{self.failed} failed, {self.per_minute():.1f} "
                                 f"{self.unit}s/min")
