"""Training and evaluation loops for SkipCNN (and any model with the same interface).

    history = fit(model, x, y, epochs=20, batch_size=128, validation_data=(x_val, y_val))
    loss, acc = evaluate(model, x_test, y_test)

The paper's settings are the defaults: RMSprop (Keras defaults), sparse
categorical cross-entropy, 20 epochs, batch 128. Batches are drawn from a
Generator seeded by (seed, epoch), so a run is reproducible bit for bit on one
machine, and a run resumed at epoch e draws exactly the batches it would have.
"""

import time

import numpy as np
from tqdm import tqdm

from npskip.engine.checks import check_array, check_finite, check_int
from npskip.engine.losses import softmax_cross_entropy
from npskip.engine.optim import RMSprop


def _check_data(model, x, y, routes, name):
    check_array(x, f"{name} images", ndim=4, dtype=model.dtype)
    y = np.asarray(y)
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} labels: expected integers of shape ({len(x)},), received "
                         f"{y.dtype} {y.shape}")
    if routes is not None and np.shape(routes) != (len(x),):
        raise ValueError(f"{name} routes: expected shape ({len(x)},), received {np.shape(routes)}")
    check_finite(x, f"{name} images")
    return y


def train_epoch(model, optimizer, x, y, routes, batch_size, rng, progress=None):
    """One pass over (x, y) in shuffled batches. Returns (mean loss, accuracy)."""
    order = rng.permutation(len(x))
    total_loss, correct, seen = 0.0, 0, 0
    for start in range(0, len(x), batch_size):
        idx = np.sort(order[start:start + batch_size])   # sorted: contiguous-ish reads
        xb, yb = x[idx], y[idx]
        logits = model.forward(xb, None if routes is None else routes[idx])
        loss, dlogits = softmax_cross_entropy(logits, yb)
        model.backward(dlogits)
        optimizer.step(model.ran_layers())
        total_loss += loss * len(idx)
        correct += int(np.count_nonzero(logits.argmax(axis=1) == yb))
        seen += len(idx)
        if progress is not None:
            progress.update(len(idx))
            progress.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}",
                                 refresh=False)
    return total_loss / seen, correct / seen


def fit(model, x, y, *, routes=None, epochs=20, batch_size=128, validation_data=None, seed=0,
        optimizer=None, history=None, on_epoch_end=None, progress=True):
    """Train ``model`` on (x, y) and return the history.

    x: (N, H, W, C) float, y: (N,) int labels.
    routes: (N,) ints (route r runs conv layers 1..r+1), or None: every sample on
        the full network.
    validation_data: (x_val, y_val) or (x_val, y_val, routes_val), evaluated after each epoch.
    optimizer: default RMSprop() (lr 1e-3, rho 0.9, eps 1e-7).
    history: a history to continue (resuming): training starts at epoch len(history["loss"]).
    on_epoch_end: called as on_epoch_end(epoch, history) after each epoch (e.g. to checkpoint).
    Returns {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}: one entry per epoch.
    """
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    y = _check_data(model, x, y, routes, "training")
    if validation_data is not None:
        x_val, y_val, *r_val = validation_data
        r_val = r_val[0] if r_val else None
        y_val = _check_data(model, x_val, y_val, r_val, "validation")
    optimizer = optimizer or RMSprop()
    history = history or {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": [],
                          "seconds": []}
    for epoch in range(len(history["loss"]), epochs):
        rng = np.random.default_rng([seed, epoch])
        start = time.perf_counter()
        with tqdm(total=len(x), desc=f"epoch {epoch + 1}/{epochs}", unit="img",
                  disable=not progress, leave=True) as bar:
            loss, acc = train_epoch(model, optimizer, x, y, routes, batch_size, rng, bar)
            if validation_data is not None:
                val_loss, val_acc = evaluate(model, x_val, y_val, r_val)
                bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.4f}", val_loss=f"{val_loss:.4f}",
                                val_acc=f"{val_acc:.4f}")
            else:
                val_loss = val_acc = None
        history["loss"].append(loss)
        history["accuracy"].append(acc)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_acc)
        history["seconds"].append(time.perf_counter() - start)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    return history


def predict(model, x, routes=None, batch_size=256):
    """Logits (N, num_classes) for x (N, H, W, C), in batches."""
    check_array(x, "images", ndim=4, dtype=model.dtype)
    check_finite(x, "images")            # as fit and evaluate do: NaN in, NaN logits out
    out = np.empty((len(x), model.num_classes), dtype=model.dtype)
    routes = None if routes is None else np.asarray(routes)
    for s in range(0, len(x), batch_size):
        r = None if routes is None else routes[s:s + batch_size]
        out[s:s + batch_size] = model.forward(x[s:s + batch_size], r)
    return out


def predict_by_route(model, x, routes, batch_size=256):
    """Logits (N, num_classes) with the images run sorted by route, returned in x's order.

    Sorting makes each batch (nearly) one route, so each conv layer runs on large
    sub-batches instead of the few images of a mixed batch that reach it.
    """
    routes = np.asarray(routes)          # range-checked by model.forward, batch by batch
    order = np.argsort(routes, kind="stable")
    logits = np.empty((len(x), model.num_classes), dtype=model.dtype)
    logits[order] = predict(model, x[order], routes[order], batch_size)
    return logits


def evaluate(model, x, y, routes=None, batch_size=256):
    """(mean loss, accuracy) of the model on (x, y), each sample on its route."""
    logits = predict(model, x, routes, batch_size)
    loss, _ = softmax_cross_entropy(logits, np.asarray(y))
    return loss, float(np.mean(logits.argmax(axis=1) == y))
