"""Ctrl-C as a request to stop at the next safe point: the end of an epoch or the start of a trial.

A KeyboardInterrupt raised at an arbitrary moment inside TensorFlow (building a tf.data pipeline, a garbage collection in
clear_session) can leave its C++ locks held, and the process then hangs instead of exiting (seen here under load).
So the first Ctrl-C only sets a flag that trials check where it is safe (TrialContext.report, execute_trial); a second
Ctrl-C raises at once, as usual.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

_requested = threading.Event()


def check() -> None:
    """Raise KeyboardInterrupt here, at a safe point, when a stop was asked for."""
    if _requested.is_set():
        raise KeyboardInterrupt


def requested() -> bool:
    return _requested.is_set()


@contextmanager
def on_ctrl_c(message: str = "stopping after this epoch (Ctrl-C again to stop at once)"):
    """While inside, the first SIGINT is a stop request; the handler before is restored on the way out."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set signal handlers
        yield
        return

    def request(signum, frame):
        _requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # the second Ctrl-C raises KeyboardInterrupt
        if message:
            print(message, file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, request)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()
