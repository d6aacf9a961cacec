"""The exercises of notebooks 01 and 02: each check passes on its reference
solution, fails on a deliberately wrong answer with an AssertionError, and
reports an untouched stub as not attempted (no error), as the notebooks need."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))

from exercises import nb01, nb02          # noqa: E402
from solutions import nb01 as sol01       # noqa: E402
from solutions import nb02 as sol02       # noqa: E402


def _stub(*args):
    raise NotImplementedError


# -- notebook 01 ------------------------------------------------------------
def test_col2im_check(capsys):
    nb01.check_col2im(sol01.col2im)
    assert "passed" in capsys.readouterr().out

    def overwrites(dcols, x_shape, kh, kw, stride, padding):
        # A classic slip: forgets that overlapping windows add up (= instead of +=).
        from npskip.engine.reference import conv_output_shape
        n, h, w, c = x_shape
        ho, wo, pt, pl = conv_output_shape(h, w, kh, kw, stride, padding)
        dx = np.zeros(x_shape)
        for b in range(n):
            for oy in range(ho):
                for ox in range(wo):
                    win = dcols[(b * ho + oy) * wo + ox].reshape(kh, kw, c)
                    for i in range(kh):
                        for j in range(kw):
                            iy, ix = oy * stride - pt + i, ox * stride - pl + j
                            if 0 <= iy < h and 0 <= ix < w:
                                dx[b, iy, ix] = win[i, j]
        return dx
    with pytest.raises(AssertionError, match=r"\+="):
        nb01.check_col2im(overwrites)
    with pytest.raises(AssertionError, match="expected dx of shape"):
        nb01.check_col2im(lambda dcols, x_shape, *a: np.zeros(dcols.shape))

    def no_border_check(dcols, x_shape, kh, kw, stride, padding):
        # Another slip: writes the padding's share into pixels that do not exist.
        from npskip.engine.reference import conv_output_shape
        n, h, w, c = x_shape
        ho, wo, pt, pl = conv_output_shape(h, w, kh, kw, stride, padding)
        dx = np.zeros(x_shape)
        for b in range(n):
            for oy in range(ho):
                for ox in range(wo):
                    win = dcols[(b * ho + oy) * wo + ox].reshape(kh, kw, c)
                    for i in range(kh):
                        for j in range(kw):
                            dx[b, oy * stride - pt + i, ox * stride - pl + j] += win[i, j]
        return dx
    with pytest.raises(AssertionError, match="only the pixels with 0 <= row < H"):
        nb01.check_col2im(no_border_check)


def test_dense_backward_check(capsys):
    nb01.check_dense_backward(sol01.dense_backward)
    assert "passed" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="dW has relative error"):
        nb01.check_dense_backward(lambda x, W, d: (d @ W.T, x.T @ d * 1.01, d.sum(0)))
    with pytest.raises(AssertionError, match="dW: expected shape"):
        nb01.check_dense_backward(lambda x, W, d: (d @ W.T, d.T @ x, d.sum(0)))
    # A product that does not fit, or a forgotten return, is reported with the shapes expected.
    with pytest.raises(AssertionError, match=r"dx like x \(N, D_in\)"):
        nb01.check_dense_backward(lambda x, W, d: (d @ W, x.T @ d, d.sum(0)))
    with pytest.raises(AssertionError, match="return dx, dW, db"):
        nb01.check_dense_backward(lambda x, W, d: None)


def test_output_shapes_check(capsys):
    nb01.check_output_shapes(sol01.OUTPUT_SHAPES)
    assert "passed" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="question 'c'"):
        nb01.check_output_shapes({**sol01.OUTPUT_SHAPES, "c": (1, 3, 3, 32)})
    # (28 - 3) / 2 + 1 = 13.5 without the floor: must not pass by int() truncating it.
    with pytest.raises(AssertionError, match="whole numbers"):
        nb01.check_output_shapes({**sol01.OUTPUT_SHAPES, "b": (5, 13.5, 13.5, 8)})
    with pytest.raises(AssertionError, match="expected four"):
        nb01.check_output_shapes({**sol01.OUTPUT_SHAPES, "a": (14, 14, 8)})


# -- notebook 02 ------------------------------------------------------------
def test_train_step_check(capsys):
    nb02.check_train_step(sol02.train_step)
    assert "passed" in capsys.readouterr().out

    def no_backward(model, optimizer, xb, yb):
        from npskip.engine.losses import softmax_cross_entropy
        loss, _ = softmax_cross_entropy(model.forward(xb), yb)
        optimizer.step(model.ran_layers())
        return loss
    with pytest.raises(AssertionError, match="no parameter changed"):
        nb02.check_train_step(no_backward)

    def two_updates(model, optimizer, xb, yb):
        loss = sol02.train_step(model, optimizer, xb, yb)
        optimizer.step(model.ran_layers())          # one update too many
        return loss
    with pytest.raises(AssertionError, match="differs from a reference step"):
        nb02.check_train_step(two_updates)

    def returns_both(model, optimizer, xb, yb):
        from npskip.engine.losses import softmax_cross_entropy
        result = softmax_cross_entropy(model.forward(xb), yb)
        model.backward(result[1])
        optimizer.step(model.ran_layers())
        return result                               # (loss, dlogits), not the loss
    with pytest.raises(AssertionError, match="expected one number"):
        nb02.check_train_step(returns_both)

    def fresh_optimizer(model, optimizer, xb, yb):
        from npskip.engine.optim import RMSprop
        return sol02.train_step(model, RMSprop(), xb, yb)   # forgets RMSprop's running average
    with pytest.raises(AssertionError, match="optimizer passed in"):
        nb02.check_train_step(fresh_optimizer)


def test_cost_check(capsys):
    nb02.check_cost(sol02.COST)
    assert "passed" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="conv2_multiply_adds"):
        nb02.check_cost({**sol02.COST, "conv2_multiply_adds": 28 * 28 * 16 * 8})
    with pytest.raises(AssertionError, match="not a whole number"):
        nb02.check_cost({**sol02.COST, "conv2_params": sol02.COST["conv2_params"] + 0.5})


def test_initial_loss_check(capsys):
    nb02.check_initial_loss(sol02.INITIAL_LOSS_100)
    assert "passed" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="-log"):
        nb02.check_initial_loss(np.log(10))


def test_untouched_stubs_are_not_attempted_not_failed(capsys):
    nb01.check_col2im(_stub)
    nb01.check_dense_backward(_stub)
    nb01.check_output_shapes({"a": None, "b": None, "c": None})
    nb02.check_train_step(_stub)
    nb02.check_cost({"conv2_params": None, "conv2_multiply_adds": None, "dense_params": None})
    nb02.check_initial_loss(None)
    out = capsys.readouterr().out
    assert out.count("not attempted yet") == 6 and "passed" not in out
