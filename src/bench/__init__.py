"""bench: hyperparameter search and benchmarking for image classification."""
import os

# TensorFlow's oneDNN CPU kernels stay on, as TensorFlow ships them: TinyNet epochs run 1.3-2x faster with them on this
# 2-core machine (measured). Their one crash bench met, on strided 1x1 convolutions, is kept out of bench's own
# networks (objectives/tinynet.py: every_other). TF_ENABLE_ONEDNN_OPTS=0 turns them off.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
