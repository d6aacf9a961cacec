"""Checks for the exercises of notebook 02 (CNN1 on MNIST).

Each check prints a line starting "passed" or raises AssertionError saying what
is wrong. A function that still raises NotImplementedError, or an answer left
as None, is reported as not attempted yet, without an error, so that the
notebook runs top to bottom before the exercises are done. Reference solutions:
../solutions/nb02.py (try first).
"""

import math

import numpy as np

from npskip.engine.losses import softmax_cross_entropy
from npskip.engine.model import SkipCNN
from npskip.engine.optim import RMSprop


# --------------------------------------------------------------------------
# Exercise 1: one training step
# --------------------------------------------------------------------------
def _reference_step(model, optimizer, xb, yb):
    logits = model.forward(xb)
    loss, dlogits = softmax_cross_entropy(logits, yb)
    model.backward(dlogits)
    optimizer.step(model.ran_layers())
    return loss


def check_train_step(train_step):
    """train_step(model, optimizer, xb, yb) -> loss, for one batch.

    Three steps on a small float64 SkipCNN are compared with three reference
    steps on an identical copy: the losses and every parameter must agree.
    """
    rng = np.random.default_rng(2)
    xb = rng.random((6, 7, 7, 1))
    yb = rng.integers(0, 4, size=6)
    mine, ref = (SkipCNN((7, 7, 1), 4, widths=(3, 5), seed=5, dtype=np.float64) for _ in range(2))
    opt_mine, opt_ref = RMSprop(), RMSprop()
    before = {f"{i}{k}": v.copy() for i, layer in enumerate(mine.layers)
              for k, v in layer.params.items()}
    for step in range(3):
        try:
            loss = train_step(mine, opt_mine, xb, yb)
        except NotImplementedError:
            print(f"not attempted yet: write {train_step.__name__} in the cell above, then rerun "
                  f"this cell")
            return
        expected = _reference_step(ref, opt_ref, xb, yb)
        try:
            loss = float(loss)
        except (TypeError, ValueError):
            raise AssertionError(
                f"step {step + 1}: train_step returned {type(loss).__name__} {loss!r:.60}, "
                f"expected one number, the batch's loss (softmax_cross_entropy returns "
                f"(loss, dlogits): return the first)") from None
        assert np.isclose(loss, expected, rtol=1e-10), (
            f"step {step + 1}: train_step returned loss {loss}, expected {expected:.6f} "
            f"(the mean cross-entropy of this batch before the update)")
        moved = any(not np.array_equal(v, before[f"{i}{k}"]) for i, layer in enumerate(mine.layers)
                    for k, v in layer.params.items())
        assert moved, ("no parameter changed: does train_step call model.backward(dlogits) "
                       "and then optimizer.step(model.ran_layers())?")
        for name, a, b in zip(("conv1", "conv2", "dense"), mine.layers, ref.layers):
            for k in a.params:
                diff = np.max(np.abs(a.params[k] - b.params[k]))
                assert diff < 1e-12, (
                    f"step {step + 1}: {name} {k} differs from a reference step by up to "
                    f"{diff:.1e}: forward, loss, backward, then one optimizer.step over "
                    f"model.ran_layers()" + (
                        ". Step 1 matched, so look at what carries over between steps: use the "
                        "optimizer passed in, whose running average of g^2 RMSprop keeps"
                        if step > 0 else ""))
    print("passed: three steps of train_step match the reference loop (losses and every weight)")


# --------------------------------------------------------------------------
# Exercise 2: what a layer costs
# --------------------------------------------------------------------------
COST_QUESTION = {"input_shape": (28, 28, 1), "num_classes": 10, "widths": (8, 16, 32)}


def check_cost(answers):
    """answers: {"conv2_params", "conv2_multiply_adds", "dense_params"} for COST_QUESTION."""
    if answers is None or any(v is None for v in dict(answers).values()):
        print("not attempted yet: fill in the three numbers in the cell above, then rerun this cell")
        return
    model = SkipCNN(**COST_QUESTION)
    conv2, dense = model.convs[1], model.dense
    truth = {
        "conv2_params": conv2.params["W"].size + conv2.params["b"].size,
        "conv2_multiply_adds": model.multiply_adds()["conv2"],
        "dense_params": dense.params["W"].size + dense.params["b"].size,
    }
    hints = {
        "conv2_params": "a 3x3 kernel per (input map, output map) pair, and one bias per output map; "
                        "with widths (8, 16, 32) conv2 maps 8 maps to 16",
        "conv2_multiply_adds": "each of the H*W*C_out outputs is a dot product of 3*3*C_in terms; "
                               "conv2 maps 8 maps to 16, on 28x28",
        "dense_params": "every input (H*W*C of the last conv layer) meets every class, plus a bias per class",
    }
    for key, value in truth.items():
        assert key in answers, f"{key}: no answer given"
        given = answers[key]
        assert float(given) == int(given), f"{key}: {given} is not a whole number (it is a count)"
        assert int(given) == value, f"{key}: {given} is not right ({hints[key]})"
    print("passed: conv2's parameters and multiply-adds and the dense layer's parameters are right")


# --------------------------------------------------------------------------
# Exercise 3: the initial loss for 100 classes
# --------------------------------------------------------------------------
def check_initial_loss(answer, num_classes=100):
    """answer: the cross-entropy a freshly initialised network should start near, for 100 classes."""
    if answer is None:
        print("not attempted yet: fill in your prediction in the cell above, then rerun this cell")
        return
    truth = math.log(num_classes)
    assert abs(float(answer) - truth) < 0.01, (
        f"{answer} is not it: with near-zero logits softmax gives every class about the same "
        f"probability; what is -log of that probability? (log is the natural logarithm, "
        f"np.log, as in the ln 10 = 2.303 of the ten digits)")
    print(f"passed: about ln {num_classes} = {truth:.3f}")
