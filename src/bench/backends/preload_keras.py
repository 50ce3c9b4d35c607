"""Imported by the forkserver that forks a Keras family's workers (bench.backends.processes.worker_context):
TensorFlow and Keras once, quietly, so that no worker pays for the import. Nothing runs: the server never starts TensorFlow's
runtime or its thread pools, which a fork would not carry over."""
import gc

from bench.keras_train import import_quietly

import_quietly()
# Move what the import made out of the garbage collector's reach: a worker's collections would otherwise write to
# those objects and copy their pages from the server. Measured on the first trial of the default MIT8 search, same
# moment, two runs each: the server's private memory 360 / 360 MB against 438 / 437, summed PSS 1,104 / 1,112 MiB
# against 1,181 / 1,172.
gc.freeze()
