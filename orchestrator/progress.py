"""Study progress a person can follow: one stderr line when something changes (a trial
starts or ends) and a heartbeat at most every ``interval_s``; no Ray event stream.

    [quickstart] 3/8 done (1 failed), 2 running | best val_accuracy 0.8125 (p001_s0) | 1m12s elapsed, ~2m05s left
    [paper_sst2_10q] 1/21 done, 20 running in 2 packs | ...     (packed trials: members and packs)
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h >= 48:
        return f"{h // 24}d{h % 24:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


class Progress:
    """Counts trials and prints a summary line; pure bookkeeping (tests drive it directly)."""

    def __init__(
        self,
        study: str,
        total: int,
        *,
        metric: str,
        mode: str,
        concurrency: int,
        already_done: int = 0,
        stream: TextIO | None = None,
        interval_s: float = 30.0,
        clock=time.monotonic,
    ) -> None:
        self.study = study
        self.total = total
        self.metric = metric
        self.mode = mode
        self.concurrency = max(1, concurrency)
        self.already_done = already_done
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self.clock = clock
        self.start = clock()
        self.running: set[str] = set()
        self.pack_of: dict[str, str] = {}  # trial id -> the pack (one Ray trial) it runs in
        self.done = 0  # finished in this run (any final status)
        self.failed = 0
        self.stopped = 0
        self.durations: list[float] = []
        self.best: tuple[float, str] | None = None
        self._last_print = -1e18
        self._last_state: tuple | None = None  # what the last printed line said, less timing

    # ---------------------------------------------------------------------------------
    def started(self, trial_id: str, pack_id: str | None = None) -> None:
        """Trial ``trial_id`` started, as a member of pack ``pack_id`` (default: alone)."""
        self.running.add(trial_id)
        self.pack_of[trial_id] = pack_id or trial_id
        self.maybe_print()

    def finished(
        self, trial_id: str, status: str, value: float | None, duration_s: float | None
    ) -> None:
        self.running.discard(trial_id)
        self.done += 1
        if status == "failed":
            self.failed += 1
        elif status == "stopped":
            self.stopped += 1
        if duration_s is not None:
            self.durations.append(duration_s)
        if value is not None and value == value and status != "failed":  # not NaN
            if self.best is None or (
                value > self.best[0] if self.mode == "max" else value < self.best[0]
            ):
                self.best = (value, trial_id)
        # a line per finished trial, but at most one a second (a study of short trials)
        self.maybe_print(force=self.clock() - self._last_print >= 1.0)

    def remaining_s(self) -> float | None:
        """Mean trial time x packs left / concurrency (None before the first trial ends).

        A member's time is its pack's, and a slot runs one pack: the trials left count as
        trials left / the mean members per pack seen so far.
        """
        if not self.durations:
            return None
        left = self.total - self.already_done - self.done
        mean = sum(self.durations) / len(self.durations)
        per_pack = max(1.0, len(self.pack_of) / max(1, len(set(self.pack_of.values()))))
        return max(0.0, mean * left / per_pack / self.concurrency)

    def _state(self) -> tuple:
        running = sorted(self.running)
        return (self.done, self.failed, self.stopped, running, self.best)

    def line(self) -> str:
        done = self.already_done + self.done
        parts = [f"[{self.study}] {done}/{self.total} done"]
        extras = []
        if self.failed:
            extras.append(f"{self.failed} failed")
        if self.stopped:
            extras.append(f"{self.stopped} stopped early")
        if self.already_done:
            extras.append(f"{self.already_done} from before")
        if extras:
            parts[0] += f" ({', '.join(extras)})"
        parts[0] += f", {len(self.running)} running"
        packs = len({self.pack_of.get(t, t) for t in self.running})
        if packs < len(self.running):
            parts[0] += f" in {packs} pack{'s' if packs != 1 else ''}"
        if self.best is not None:
            parts.append(f"best {self.metric} {self.best[0]:.4f} ({self.best[1]})")
        elapsed = self.clock() - self.start
        timing = f"{format_duration(elapsed)} elapsed"
        left = self.remaining_s()
        if left is not None:
            timing += f", ~{format_duration(left)} left"
        parts.append(timing)
        return " | ".join(parts)

    def maybe_print(self, *, force: bool = False) -> None:
        """Print the line when ``interval_s`` has passed since the last one (the heartbeat),
        or, with ``force``, when it says something the last one did not (timing aside)."""
        now = self.clock()
        state = self._state()
        due = now - self._last_print >= self.interval_s
        if due or (force and state != self._last_state):
            self._last_print, self._last_state = now, state
            print(self.line(), file=self.stream, flush=True)
