"""Run in a subprocess: `tfnas` (tfnas.cli.main) with ARGS, sending itself SIGNAL after
global step STEP of the search, selection tuning or custom retraining loop, as SLURM or
`docker stop` would between two steps; `--twice` sends it a second time right after.
Usage: signal_run.py SIGNAL STEP [--twice] -- ARGS..."""

import os
import signal
import sys

sep = sys.argv.index("--")
name, at, twice = sys.argv[1], int(sys.argv[2]), "--twice" in sys.argv[3:sep]
argv = sys.argv[sep + 1:]
signum = getattr(signal, name)
count = [0]


def counting(run):
    def wrapped(*args, **kwargs):
        out = run(*args, **kwargs)
        count[0] += 1
        if count[0] == at:
            os.kill(os.getpid(), signum)
            if twice:
                os.kill(os.getpid(), signum)
        return out
    return wrapped


from tfnas.search.loop import SearchLoop  # noqa: E402
from tfnas.retrain import RetrainLoop  # noqa: E402

SearchLoop._run_steps = counting(SearchLoop._run_steps)
_init = RetrainLoop.__init__


def init(self, *a, **k):
    _init(self, *a, **k)
    self._steps_fn = counting(self._steps_fn)


RetrainLoop.__init__ = init

from tfnas.cli import main  # noqa: E402

sys.exit(main(argv))
