"""Imported by the forkserver that forks a Keras family's workers (bench.backends.processes.worker_context):
TensorFlow and Keras once, quietly, so that no worker pays for the import. Nothing runs: the server never starts TensorFlow's
runtime or its thread pools, which a fork would not carry over."""
from bench.keras_train import import_quietly

import_quietly()
