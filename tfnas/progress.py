"""Progress inside a pass (an epoch, a tuning epoch, a PT scoring pass).

On a terminal: Keras's progress bar. Anywhere else (a SLURM or Kubernetes log, a pipe), a
bar is either invisible or thousands of carriage returns, so one plain line is written every
`TFNAS_PROGRESS_SECONDS` seconds (default 30; 0: every step) with the step, images per
second, the running loss and the pass's ETA, e.g.

    epoch 3: step 120/390, 35.2 img/s, loss 1.234, ETA 2m10s
"""

import os
import sys
import time

from tfnas.io import fmt_time

DEFAULT_SECONDS = 30.0


def interval():
    """Seconds between two progress lines off a terminal (`TFNAS_PROGRESS_SECONDS`)."""
    try:
        return max(0.0, float(os.environ.get("TFNAS_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


class Progress:
    """Args:
        total: steps (batches) of the pass.
        label: what the pass is ("epoch 3", "scoring").
        batch_size: images per step (for img/s; None: not shown).
        log: where lines go off a terminal (default: print, flushed).
        bar: show Keras's bar on a terminal (False: lines only, and only off a terminal).
    """

    def __init__(self, total, label, batch_size=None, log=None, bar=True, start=0):
        self.total, self.label, self.batch_size = int(total), label, batch_size
        self.log = log or (lambda line: print(line, flush=True))
        self.tty = sys.stdout.isatty()
        self.every = interval()
        self.t0 = self.last = time.time()
        self.start = start
        self.bar = None
        if self.tty and bar:
            import keras
            self.bar = keras.utils.Progbar(self.total, verbose=1, unit_name="step")
            if start:
                self.bar.update(start)

    def update(self, done, loss=None):
        """After step `done` (1-based count of steps run in this pass)."""
        if self.bar is not None:
            self.bar.update(done, [("loss", loss)] if loss is not None else None)
            return
        now = time.time()
        if self.tty or (now - self.last < self.every and done < self.total) or \
                done >= self.total:
            return
        self.last = now
        ran, spent = done - self.start, max(now - self.t0, 1e-9)
        parts = [f"step {done}/{self.total}"]
        if self.batch_size:
            parts.append(f"{ran * self.batch_size / spent:.1f} img/s")
        if loss is not None:
            parts.append(f"loss {loss:.3f}")
        parts.append(f"ETA {fmt_time(spent / max(ran, 1) * (self.total - done))}")
        self.log(f"  {self.label}: " + ", ".join(parts))
