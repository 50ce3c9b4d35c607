"""Trials run in worker processes, never in the process that started the search.

Each worker is a fresh `spawn`ed process that runs up to `recycle` trials and exits; the supervisor starts another in
its place until the study is done. Why:
- memory stays flat: TensorFlow leaks graph memory trial after trial even with clear_session (2.5 GB by trial 60 of
  one process, measured), and a process that exits gives all of it back;
- a crash (a segfault or abort inside TensorFlow, an out-of-memory kill) or a hang ends one worker, not the search: the
  supervisor fails the trial that worker was running, with the reason, and starts a new worker.

Workers send their progress (trial started, epoch, trial finished) through a queue; the supervisor draws it.
The backend gives the supervisor two functions: `work(slot, queue)`, the body of a worker, which reports through
`WorkerEvents(queue, slot)` (start_trial before a trial's work begins, trial_done after it is stored), and
`lost(pid, reason)`, which stores the trials a dead worker was running (they are known by that worker's pid: a
process that aborts loses what it had not yet sent).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_module
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import psutil

from bench import stop


FIRST_WORKER_ENV = "BENCH_FIRST_WORKER"  # "1" in the search's first worker process only


def first_worker() -> bool:
    return os.environ.get(FIRST_WORKER_ENV) == "1"


def die_with_parent() -> None:
    """Called first in a worker: if the search's process is killed (kill -9), its workers go too, instead of running
    on as orphans beside the resumed search. Linux tells the kernel (PR_SET_PDEATHSIG); elsewhere a thread watches."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="die-with-parent").start()


class WorkerEvents:
    """The worker's side of the queue: a progress object (bench.progress.SearchProgress's calls) whose calls travel
    to the supervisor, which draws them and learns from them which trial each worker runs."""

    def __init__(self, queue, slot: int):
        self.queue, self.slot = queue, slot

    def _send(self, name: str, *args, **kwargs) -> None:
        self.queue.put((self.slot, name, args, kwargs))

    def start_trial(self, number: int) -> None:
        self._send("start_trial", number)

    def epoch(self, epoch: int, total: int, metrics: dict[str, float]) -> None:
        self._send("epoch", epoch, total, {k: float(v) for k, v in metrics.items()})

    def trial_done(self, *args, **kwargs) -> None:
        self._send("trial_done", *args, **kwargs)

    def on_trial_finished(self, study, trial) -> None:  # an Optuna callback, as SearchProgress's
        from bench.progress import trial_done_args

        self.trial_done(**trial_done_args(study, trial))

    def note(self, text: str) -> None:
        """A line for the console, such as the device the first worker trains on."""
        self._send("note", text)

    def fatal(self, message: str) -> None:
        """An error every later trial would hit too (bad data, all trials failing alike): the search stops."""
        self._send("fatal", message)


@dataclass
class _Worker:
    process: Any
    trial: int | None = None  # the trial it is running now
    since: float = 0.0  # when that trial started (monotonic)


def _overrun(worker: _Worker, trial_timeout: float | None, memory_limit_mb: float | None) -> str | None:
    """Why a worker's running trial must be stopped now, or None."""
    if worker.trial is None:
        return None
    if trial_timeout and time.monotonic() - worker.since > trial_timeout:
        return f"exceeded --trial-timeout {trial_timeout:g} s"
    if memory_limit_mb:
        try:
            rss = psutil.Process(worker.process.pid).memory_info().rss / 2**20
        except psutil.Error:
            return None
        if rss > memory_limit_mb:
            return f"exceeded --trial-memory {memory_limit_mb:g} MB (its worker held {rss:.0f} MB)"
    return None


def exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "unknown"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"its worker process was killed by signal {-exitcode} ({name}){hint}"
    return f"its worker process exited with code {exitcode}"


def supervise(work: Callable[[int, Any], None], lost: Callable[[int, str], None], jobs: int, more: Callable[[], bool],
              progress=None, trial_timeout: float | None = None, memory_limit_mb: float | None = None,
              tick: Callable[[], None] | None = None, poll: float = 0.2) -> None:
    """Keep `jobs` workers running `work(slot, queue)` while `more()` says the study needs more trials.

    A worker that dies has the trials it was running stored by `lost(pid, reason)`; a trial that runs past
    `trial_timeout` seconds, or whose worker's resident memory passes `memory_limit_mb`, has its worker killed and is
    stored the same way. A worker that stops on an error every
    trial would hit (`WorkerEvents.fatal`) stops the search: its message is raised here as ValueError once the others
    are done. `tick()`, if given, is called every poll (the backend's own housekeeping). After Ctrl-C (each worker stops at its next safe point) KeyboardInterrupt is raised here."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: TensorFlow's threads do not survive fork
    events = ctx.Queue()
    workers: dict[int, _Worker] = {}
    fatal: list[str] = []

    started = 0

    def start(slot: int) -> None:
        nonlocal started
        os.environ[FIRST_WORKER_ENV] = "1" if started == 0 else ""  # the spawned process reads it at start
        process = ctx.Process(target=work, args=(slot, events), daemon=True)
        process.start()
        started += 1
        workers[slot] = _Worker(process)

    def handle(slot: int, name: str, args: tuple, kwargs: dict) -> None:
        worker = workers.get(slot)
        if name == "fatal":
            fatal.append(args[0])
            return
        if name == "note":
            if progress:
                progress.note(args[0])
            return
        if name == "start_trial" and worker:
            worker.trial, worker.since = args[0], time.monotonic()
        elif name == "trial_done" and worker:
            worker.trial = None
        if progress:
            getattr(progress, name)(*args, **kwargs)

    def drain(timeout: float) -> None:
        try:
            handle(*events.get(timeout=timeout))
            while True:
                handle(*events.get_nowait())
        except queue_module.Empty:
            pass

    for slot in range(jobs):
        start(slot)
    forwarded = False
    try:
        while workers:
            drain(poll)
            if tick:
                tick()
            if stop.requested() and not forwarded:  # a Ctrl-C sent to this process alone (kill -INT) reaches them too
                forwarded = True
                for worker in workers.values():
                    if worker.process.is_alive():
                        os.kill(worker.process.pid, signal.SIGINT)
            for slot, worker in list(workers.items()):
                if worker.process.is_alive():
                    why = _overrun(worker, trial_timeout, memory_limit_mb)
                    if why is None:
                        continue
                    worker.process.kill()  # a hung or runaway trial: only killing its process frees the core
                    worker.process.join()
                    lost(worker.process.pid, f"{why}; its worker was killed")
                worker.process.join()
                drain(0.05)  # what it said before it went
                if worker.process.exitcode != 0:  # it may have died under a trial whose start it never got to say
                    lost(worker.process.pid, exit_reason(worker.process.exitcode))
                del workers[slot]
                if not fatal and not stop.requested() and more():
                    start(slot)
    finally:
        for worker in workers.values():  # Ctrl-C twice, or an error here: leave no worker behind
            if worker.process.is_alive():
                worker.process.terminate()
            worker.process.join(5)
    if stop.requested():
        raise KeyboardInterrupt
    if fatal:
        raise ValueError(fatal[0])
