"""Resident-memory sampling shared by the benchmarks (Linux /proc)."""

from __future__ import annotations

import os
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakRSS:
    """Samples resident memory every 20 ms in a thread: the peak while the block runs."""

    def __enter__(self) -> PeakRSS:
        self.peak = rss()
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._t.join()
