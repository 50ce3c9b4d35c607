"""Trials run in worker processes, never in the process that started the search.

Each worker is a fresh process that runs up to `recycle` trials and exits; the supervisor starts another in its place
until the study is done. Workers are forked from multiprocessing's forkserver, a process that imported the family's
heavy modules once and never runs TensorFlow (`worker_context`), so a recycled worker skips a fresh interpreter's
TensorFlow import. Why workers:
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
import multiprocessing.connection as mp_connection
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


def worker_context(preload: list[str]):
    """Where worker processes come from: multiprocessing's forkserver where the platform has one (Linux, macOS), with
    `preload` (module names) imported in it once; spawn elsewhere (a fresh interpreter per worker, as on Windows).

    Forking from the server, not from the search's process: TensorFlow's thread pools do not survive a fork, and the
    server never runs TensorFlow, it only imports it (importing TensorFlow + Keras takes 5.6 s and 640 MB, measured:
    every recycled worker paid that when each was spawned; forked, they share those pages). A process has one
    forkserver, started with the first worker: its preload list is the one set then."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    return ctx


def _in_callers_environment(env: dict[str, str], target: Callable, *args) -> None:
    """A worker's entry: it dies with the search (die_with_parent), takes the environment of the process that started
    it (a forked worker would otherwise have the forkserver's, as it was when the server started), then runs its body."""
    die_with_parent()
    os.environ.clear()
    os.environ.update(env)
    target(*args)


def die_with_parent() -> None:
    """Called first in a worker: if the search's process is killed (kill -9), its workers go too, instead of running
    on as orphans beside the resumed search. A thread waits on multiprocessing's sentinel of the process that started
    this one. Not the kernel's parent-death signal: a forked worker's parent is the forkserver, which lives on while
    any worker it forked does (every one holds the server's alive pipe)."""
    parent = mp.parent_process()
    if parent is None:  # not started by multiprocessing: there is no search to follow
        return

    def watch() -> None:
        mp_connection.wait([parent.sentinel])  # ready at the parent's exit, however it ended
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
    events: Any  # its own queue: a process killed while writing to a shared one leaves that queue's lock held
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
        if -exitcode in (signal.SIGSEGV, signal.SIGABRT) and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
            hint = (" (a crash inside TensorFlow? its oneDNN kernels crash on strided 1x1 convolutions; "
                    "TF_ENABLE_ONEDNN_OPTS=0 turns them off)")
        return f"its worker process was killed by signal {-exitcode} ({name}){hint}"
    return f"its worker process exited with code {exitcode}"


def supervise(work: Callable[[int, Any], None], lost: Callable[[int, str], None], jobs: int, more: Callable[[], bool],
              progress=None, trial_timeout: float | None = None, memory_limit_mb: float | None = None,
              tick: Callable[[], None] | None = None, poll: float = 0.2, preload: list[str] | None = None) -> None:
    """Keep `jobs` workers running `work(slot, queue)` while `more()` says the study needs more trials.

    A worker that dies has the trials it was running stored by `lost(pid, reason)`; a trial that runs past
    `trial_timeout` seconds, or whose worker's resident memory passes `memory_limit_mb`, has its worker killed and is
    stored the same way. A worker that stops on an error every trial would hit (`WorkerEvents.fatal`) stops the search:
    its message is raised here as ValueError once the others are done. `tick()`, if given, is called every poll (the
    backend's own housekeeping). `preload`: the modules the workers' forkserver imports once (worker_context). After
    Ctrl-C (each worker stops at its next safe point) KeyboardInterrupt is raised here."""
    ctx = worker_context(preload or [])
    workers: dict[int, _Worker] = {}
    fatal: list[str] = []

    started = 0

    def start(slot: int) -> None:
        nonlocal started
        env = {**os.environ, FIRST_WORKER_ENV: "1" if started == 0 else ""}
        # a queue per worker: one that aborts mid-write (os.abort, a segfault) leaves its queue's lock held, which
        # made every other worker's messages wait forever when they shared one (a hung trial then went unseen)
        events = ctx.Queue()
        process = ctx.Process(target=_in_callers_environment, args=(env, work, slot, events), daemon=True)
        process.start()
        started += 1
        workers[slot] = _Worker(process, events)

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
        """Handle what the workers have sent, waiting up to `timeout` seconds for the first message."""
        deadline = time.monotonic() + timeout
        while True:
            got = False
            for worker in list(workers.values()):
                try:
                    while True:
                        handle(*worker.events.get_nowait())
                        got = True
                except (queue_module.Empty, EOFError, OSError, ValueError):  # drained, or cut off by its worker's death
                    pass
            if got or time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    for slot in range(jobs):
        if not stop.requested():  # asked to stop before it began: a forked worker would start a trial first
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


# --- one trial at a time in a child process: --trial-timeout / --trial-memory for kerastuner and Ray ---


class _RemoteTraceback(Exception):
    """The child's traceback, chained under the exception raised here, so failures.log shows where it failed."""

    def __str__(self) -> str:
        return self.args[0]


def _trial_child(jobs, events) -> None:
    """The child's body: run each (objective name, params, context) it is sent, sending back epochs and the outcome."""
    import traceback

    from bench.data import DataError
    from bench.objective import Pruned, TrialFailed, get_objective

    die_with_parent()
    with stop.on_ctrl_c(message=""):  # the terminal's Ctrl-C reaches the child too: stop at the next epoch
        while True:
            job = jobs.get()
            if job is None:
                return
            name, params, ctx = job
            events.put(("started",))  # the time limit counts from here, not from this process's start-up
            ctx.progress = lambda epoch, total, metrics: events.put(("epoch", epoch, total, _floats(metrics)))
            ctx.report_hook = lambda epoch, metrics: events.put(("report", epoch, _floats(metrics))) or False
            try:
                result = get_objective(name).run(params, ctx)
                events.put(("done", result, ctx.curve, ctx.n_params))
            except BaseException as e:  # noqa: BLE001 - every outcome goes back to the backend's process
                kind = ("pruned" if isinstance(e, Pruned) else "failed" if isinstance(e, TrialFailed) else
                        "data" if isinstance(e, DataError) else "interrupted" if isinstance(e, KeyboardInterrupt) else "error")
                message = str(e) if kind != "error" else f"{type(e).__name__}: {e}"
                events.put(("raised", kind, message, traceback.format_exc(), ctx.curve, ctx.n_params))
                if kind == "interrupted":
                    return


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


class TrialProcess:
    """Runs trials of an objective one at a time in a spawned child process, for the backends whose trials would
    otherwise run in their own process (keras-tuner's search loop, a Ray worker): a trial that runs past
    `trial_timeout` seconds, or whose child holds more than `memory_limit_mb`, has its child killed and fails with
    that reason; a crash of the child fails that trial only. The child is reused for `recycle` trials (starting one
    costs a Python and TensorFlow start-up, a few seconds), then replaced, which also keeps memory flat.

    `run(objective_name, params, ctx)` stands in for `get_objective(name).run(params, ctx)`: the same Result, the same
    exceptions (Pruned, TrialFailed, DataError, KeyboardInterrupt), and ctx.progress / ctx.report_hook called here,
    epoch by epoch, as the child reports them."""

    def __init__(self, trial_timeout: float | None = None, memory_limit_mb: float | None = None, recycle: int = 10,
                 poll: float = 0.2):
        self.trial_timeout, self.memory_limit_mb, self.recycle, self.poll = trial_timeout, memory_limit_mb, recycle, poll
        self._process, self._jobs, self._events, self._ran = None, None, None, 0

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: TensorFlow's threads do not survive fork
        self._jobs, self._events = ctx.Queue(), ctx.Queue()
        self._process = ctx.Process(target=_trial_child, args=(self._jobs, self._events), daemon=True)
        self._process.start()
        self._ran = 0

    def close(self) -> None:
        """End the child (at once: it is idle between trials, or its trial is being abandoned)."""
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join()
            self._process = None

    def run(self, objective_name: str, params: dict[str, Any], ctx):
        from dataclasses import replace

        from bench.data import DataError
        from bench.objective import Pruned, TrialFailed

        if self._process is None or not self._process.is_alive() or self._ran >= self.recycle:
            self.close()
            self._start()
        self._ran += 1
        self._jobs.put((objective_name, params, replace(ctx, report_hook=None, progress=None)))
        since, forwarded = None, False
        while True:
            try:
                event = self._events.get(timeout=self.poll)
            except queue_module.Empty:
                event = None
            if event is None:
                if stop.requested() and not forwarded:  # a stop sent to this process alone reaches the trial too
                    forwarded = True
                    os.kill(self._process.pid, signal.SIGINT)
                why = self._overrun(since)
                if why is None and self._process.is_alive():
                    continue
                if why is None:
                    why = exit_reason(self._process.exitcode).replace("its worker process", "the trial's process")
                else:
                    why = f"{why}; its process was killed"
                self.close()
                raise TrialFailed(why)
            if event[0] == "started":
                since = time.monotonic()
            elif event[0] == "epoch":
                if ctx.progress:
                    ctx.progress(*event[1:])
            elif event[0] == "report":
                ctx.curve.append({"epoch": event[1], **event[2]})
                if ctx.report_hook and ctx.report_hook(event[1], event[2]):
                    self.close()
                    raise Pruned(event[1] + 1)
            elif event[0] == "done":
                result, ctx.curve[:], ctx.n_params = event[1], event[2], event[3]
                return result
            else:
                kind, message, tb, ctx.curve[:], ctx.n_params = event[1:]
                if kind == "pruned":  # after as many epochs as it reported
                    raise Pruned(len(ctx.curve), message) from _RemoteTraceback(tb)
                error = {"failed": TrialFailed, "data": DataError, "interrupted": KeyboardInterrupt}
                raise error.get(kind, TrialFailed)(message) from _RemoteTraceback(tb)

    def _overrun(self, since: float | None) -> str | None:
        if since is None:  # still starting up
            return None
        if self.trial_timeout and time.monotonic() - since > self.trial_timeout:
            return f"exceeded --trial-timeout {self.trial_timeout:g} s"
        if self.memory_limit_mb and self._process.is_alive():
            try:
                rss = psutil.Process(self._process.pid).memory_info().rss / 2**20
            except psutil.Error:
                return None
            if rss > self.memory_limit_mb:
                return f"exceeded --trial-memory {self.memory_limit_mb:g} MB (its process held {rss:.0f} MB)"
        return None


class LimitedObjective:
    """The registered objective `name`, each run of which goes through a TrialProcess (for execute_trial)."""

    def __init__(self, name: str, process: TrialProcess):
        self.name, self.process = name, process

    def run(self, params: dict[str, Any], ctx):
        return self.process.run(self.name, params, ctx)
