"""bench: hyperparameter search and benchmarking for image classification."""
import os

# Before TensorFlow is imported anywhere (keras-tuner and Ray import it too):
# TF 2.21's oneDNN CPU kernels crashed whole sweeps (free(): invalid size) on residual TinyNets at 96-128 px;
# without them the same nets train. TF_ENABLE_ONEDNN_OPTS=1 takes them back.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
