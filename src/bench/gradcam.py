"""Grad-CAM (Selvaraju et al., 2017) for Keras CNNs, and its overlay on the image.

The heat map of class c is ReLU(sum_k w_k A_k), A the feature maps of the last layer with a spatial output (the last
conv block, after its activation), w_k the spatial mean of d log p_c / d A_k. The log-probability is used instead of the
pre-softmax score because the families end in a softmax layer; it keeps the gradient from vanishing when p_c is near 1.
"""
from __future__ import annotations

import numpy as np

# a small "jet"-like colour map: (position, r, g, b)
_ANCHORS = np.array([(0.0, 0, 0, 128), (0.15, 0, 0, 255), (0.4, 0, 220, 255), (0.6, 255, 230, 0), (0.85, 255, 40, 0),
                     (1.0, 128, 0, 0)], dtype=np.float64)


def last_spatial_layer(model):
    """The last layer whose output is a 4-D feature map (N, H, W, C), skipping pre-processing and augmentation."""
    skip = ("InputLayer", "Rescaling", "Normalization", "RandomFlip", "RandomTranslation", "RandomRotation", "RandomZoom")
    found = None
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and layer.__class__.__name__ not in skip:
            found = layer
    if found is None:
        raise ValueError(f"model '{model.name}' has no layer with a spatial (N, H, W, C) output: Grad-CAM needs a CNN")
    return found


def gradcam(model, images: np.ndarray, classes: np.ndarray | list[int], layer=None) -> np.ndarray:
    """Heat maps in [0, 1] at the images' size, one per image, for the given class of each image."""
    import tensorflow as tf

    from bench.keras_train import keras

    layer = layer or last_spatial_layer(model)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    grad_model = keras().Model(inputs, [layer.output, model.output])
    x = tf.convert_to_tensor(np.asarray(images, np.float32))
    idx = tf.constant(np.asarray(classes, np.int32))
    with tf.GradientTape() as tape:
        feats, proba = grad_model(x, training=False)
        score = tf.math.log(tf.gather(proba, idx, axis=1, batch_dims=1) + 1e-12)
    grads = tape.gradient(score, feats)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * feats, axis=-1)).numpy()
    size = images.shape[1:3]
    out = np.empty((len(cams), *size), np.float32)
    for i, cam in enumerate(cams):
        up = tf.image.resize(cam[..., None], size, method="bilinear").numpy()[..., 0]
        top = up.max()
        out[i] = up / top if top > 0 else up
    return out


def colormap(heat: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB through a jet-like map."""
    h = np.clip(heat, 0, 1)
    rgb = [np.interp(h, _ANCHORS[:, 0], _ANCHORS[:, c]) for c in (1, 2, 3)]
    return np.stack(rgb, axis=-1).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heat map blended over the image (uint8 RGB; a grayscale image is repeated to RGB)."""
    img = np.asarray(image, np.float64)
    if img.ndim == 2 or img.shape[-1] == 1:
        img = np.repeat(img.reshape(*img.shape[:2], 1), 3, axis=-1)
    return ((1 - alpha) * img + alpha * colormap(heat)).clip(0, 255).astype(np.uint8)
