"""SIGTERM and SIGINT as checkpoints.

SLURM, Kubernetes and `docker stop` send SIGTERM some seconds before they kill a job. The
`tfnas` command installs `STOP`'s handlers: the first SIGTERM or SIGINT only records the
request and says so in one line; the loops poll `STOP.signum` at their step boundaries,
save the state there (the search and selection's tuning: a mid-epoch checkpoint that
resumes on exactly the batches an uninterrupted run would see; `tfnas train`: its last
committed epoch) and raise `Interrupted`, which the CLI turns into one line and exit code
128 + the signal number. A second signal exits at once (everything tfnas writes is atomic,
so what is on disk stays consistent; temporary files are removed at the next start).

Library users who do not call `STOP.install()` keep Python's own signal behaviour, and the
loops never see a request.
"""

import os
import signal
import threading

from tfnas.errors import TfnasError


class Interrupted(TfnasError):
    """A run stopped on SIGTERM or SIGINT after saving what it could; exit 128 + signum."""

    def __init__(self, message, signum=signal.SIGTERM):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


def signal_name(signum):
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopRequest:
    """The process's stop request: `signum` is None until SIGTERM or SIGINT arrives."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum = None
        self._previous = {}

    @property
    def requested(self):
        return self.signum is not None

    def install(self):
        """Installs the handlers (main thread only; elsewhere a no-op). Returns self."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for s in self.SIGNALS:
            previous = signal.signal(s, self._handle)
            self._previous.setdefault(s, previous)
        return self

    def reclaim(self):
        """Installs the handlers again if they were installed: TensorFlow's coordination
        service (MultiWorkerMirroredStrategy) sets its own C-level SIGTERM handler, which
        swallows the signal, when the cluster starts."""
        if self._previous:
            self.install()

    def uninstall(self):
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._previous.clear()
        self.signum = None

    def _handle(self, signum, frame):
        name = signal_name(signum)
        if self.signum is not None:  # the second signal: exit now
            os.write(2, f"tfnas: second {name}: exiting at once; rerun the same command to "
                        f"resume from the last checkpoint\n".encode())
            os._exit(128 + signum)
        self.signum = signum
        os.write(2, f"tfnas: {name} received: saving the state at the next step boundary "
                    f"(send it again to exit at once)\n".encode())

    def check(self, saved, peer=False):
        """Raises Interrupted when a stop was requested here (or, with `peer`, on another
        worker of the run); `saved` says where the state is (one clause: 'the state of
        epoch 3 after step 12 is saved in DIR')."""
        if self.signum is not None or peer:
            signum = self.signum or signal.SIGTERM
            who = signal_name(signum) if self.signum else "another worker's stop request"
            raise Interrupted(f"stopped by {who}: {saved}; rerun the same command to resume",
                              signum)


    def stop_in_epoch(self, save, epoch, step):
        """Ends an epoch that a stop request (here or, agreed by the caller, on another
        worker) interrupts after `step`: `save()` writes the partial state and returns where
        (None when there is nothing to save), then `Interrupted` is raised."""
        where = save() if save else None
        self.check(where or f"epoch {epoch + 1} stopped after step {step}; its state is not "
                            f"saved here", peer=True)


STOP = StopRequest()
