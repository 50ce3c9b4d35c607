"""The objective contract, on a tiny sample of the real images: every registered family through bench.checks (the rules
`bench check-objective` runs), then TinyNet's own architecture tests."""
import numpy as np
import pytest

from bench.checks import RULES, check_objective
from bench.objective import OBJECTIVES, Pruned, TrialContext, TrialFailed
from bench.objectives.tinynet import TinyNet
from bench.registry import names

QUICK_TINYNET = TinyNet.quick_params


def ctx_for(root, **kw):
    return TrialContext(seed=kw.pop("seed", 0), data_root=root, val_fraction=0.25, **kw)


@pytest.mark.parametrize("name", names())  # a family is tested by being registered: no hand list, no skips
def test_every_objective_honours_the_contract(name, made_images):
    """build -> fit (1 epoch) -> Result, same seed -> same result, max_params, prune hook, save -> load, on images the
    test makes. A family without quick_params fails here (the quick params rule), it is not skipped."""
    checks = check_objective(name, made_images, sample=False)
    assert [c.rule for c in checks] == [rule for rule, _ in RULES]
    broken = [f"{c.rule}: {c.message}" for c in checks if c.status == "FAIL"]
    assert not broken, "\n".join(broken)
    must = {"loads", "quick params", "result", "same seed", "max_params", "prune hook"}
    if name in OBJECTIVES:  # bench's own families all save a model and load it back
        must |= {"spaces", "save -> load"}
    assert {c.rule for c in checks if c.status == "ok"} >= must, [(c.rule, c.status, c.message) for c in checks]


def _built(params):
    net = TinyNet()
    from bench.data import Split

    size = params.get("input_size", 64)
    x = np.zeros((2, size, size, 3), np.uint8)
    y = np.zeros(2, int)
    model = net.build(net.resolve(params), Split(x, y, x, y, x, y, tuple("abcdefgh")))
    return net, model


def test_paper_baseline_has_34472_params():
    net, model = _built(dict(input_size=32, blocks=2, base_filters=32, growth=1.0, kernel_size=5, padding="valid",
                             downsample="maxpool", head="flatten", batch_norm=False))
    assert net.count_params(model) == 34_472
    net.release(model)


def test_paper_final_tinynet_is_expressible():
    net, model = _built(dict(input_size=64, blocks=4, base_filters=32, growth=2.0, kernel_size=3, downsample="stride2",
                             batch_norm=True, init="he_normal", head="gap"))
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 64, 128, 256]
    assert all(c.strides == (2, 2) and c.kernel_size == (3, 3) for c in convs)
    assert model.layers[-2].__class__.__name__ == "GlobalAveragePooling2D"
    net.release(model)


@pytest.mark.parametrize("extra", [
    dict(residual=True), dict(separable=True), dict(residual=True, separable=True, downsample="maxpool"),
    dict(blocks=6, input_size=32, convs_per_block=2, residual=True),
])
def test_residual_and_separable_blocks_build(extra):
    net, model = _built({"input_size": 48, "base_filters": 8, **extra})
    kinds = {layer.__class__.__name__ for layer in model.layers}
    assert ("Add" in kinds) == bool(extra.get("residual"))
    assert ("SeparableConv2D" in kinds) == bool(extra.get("separable"))
    assert model.output_shape == (None, 8)
    net.release(model)


def test_nan_loss_fails_the_trial(tiny_mit8):
    params = dict(QUICK_TINYNET, optimizer="sgd", lr=1e12, momentum=0.9, init="random_normal", batch_norm=False, epochs=3)
    with pytest.raises(TrialFailed, match="loss became NaN"):
        TinyNet().run(params, ctx_for(tiny_mit8))


def test_report_hook_prunes_and_keeps_the_curve(tiny_mit8):
    seen = []
    ctx = ctx_for(tiny_mit8, report_hook=lambda epoch, m: seen.append(m["val_accuracy"]) or epoch >= 1)
    with pytest.raises(Pruned, match="after epoch 2"):
        TinyNet().run(dict(QUICK_TINYNET, epochs=5), ctx)
    assert len(seen) == 2 and [c["epoch"] for c in ctx.curve] == [0, 1]
    assert ctx.n_params > 0


def test_unknown_params_are_rejected():
    with pytest.raises(ValueError, match="unknown params \\['colour_mode'\\]"):
        TinyNet().resolve({"colour_mode": 1})


def test_every_other_pixel_then_a_1x1_conv_is_a_strided_1x1_conv():
    """TinyNet's shortcuts and 1x1 downsampling convs are written this way (oneDNN crashes on strided 1x1 kernels):
    the same weights must give the same outputs, odd sizes included."""
    from bench import keras_train as kt
    from bench.objectives.tinynet import every_other

    L = kt.keras().layers
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 5)).astype("float32")
    strided = L.Conv2D(4, 1, strides=2, padding="same")
    plain = L.Conv2D(4, 1)
    want = np.asarray(strided(x))
    plain.build(x.shape)
    plain.set_weights(strided.get_weights())
    got = np.asarray(plain(every_other(L, x, 2)))
    assert got.shape == want.shape == (2, 5, 5, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("extra", [dict(residual=True), dict(kernel_size=1, residual=False)])
def test_nets_with_strided_1x1_convs_at_128px_do_not_crash_the_process(tiny_mit8, extra):
    """TF 2.21's oneDNN kernels, on by default, segfaulted on this trial of a real sweep (its residual shortcuts are
    strided 1x1 convs), and on a net of 1x1 kernels downsampling by stride; TinyNet writes those convs another way (in
    a subprocess here, so a crash fails this test instead of killing pytest)."""
    import subprocess
    import sys

    params = dict(input_size=128, blocks=6, base_filters=24, growth=1.0, max_filters=64, kernel_size=7, residual=True,
                  batch_norm=False, head="flatten", optimizer="rmsprop", lr=8.8e-4, momentum=0.68, one_cycle=True,
                  batch_size=16, flip=False, shift=0.05, epochs=1)
    params.update(extra)
    code = ("from bench.objective import TrialContext; from bench.objectives.tinynet import TinyNet; "
            f"r = TinyNet().run({params!r}, TrialContext(data_root={str(tiny_mit8)!r})); print('epochs', r.epochs)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "epochs 1" in run.stdout, run.stderr[-2000:]
