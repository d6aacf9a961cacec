"""npskip: layer skipping in CNNs, from scratch in NumPy and numba.

A reproduction of "Systematic Model Complexity Reduction by Elimination of
Irrelevant Layers in Convolutional Neural Networks" (Gadepally, Dhal,
Kalafatis, Nowka). Read it in this order:

engine/    the network and its training: what a learner reads first
    reference.py   the plain twins: im2col, col2im, convolution forward and
                   backward, the routed dense layer, written as the math reads
    kernels.py     the same in numba, image by image (tested against reference)
    checks.py      shapes, dtypes and NaN, checked with messages that say what was expected
    layers.py      Conv2D, ReLU, Flatten, Dense: forward and an explicit backward
    losses.py      softmax cross-entropy, fused and stable
    optim.py       RMSprop as Keras 3 has it
    gradcheck.py   finite differences: the proof that every backward pass is right
    model.py       SkipCNN: the paper's network, each sample skipping layers for real
    train.py       fit, predict, evaluate
paper/     the paper's pipeline
    stats.py       intervals, baselines, splits, paired differences
    ranking.py     strongest activations -> the layer labels
    pipeline.py    SeedRun: CNN1, ranking, CNN2, CNN3 as resumable stages
exits/     beyond the paper: CNN1 with early exits
    heads.py       the exit heads and the cascade
    selection.py   the rule that picks the threshold on validation alone
    stages.py      the exits and exit_curve stages
    report.py      their section of the report
harness/   what runs the experiments: config.py, data.py, download.py,
           checkpoint.py, runfolder.py
report.py  results.json, report.md and figures;  cli.py  the ``npskip`` command
"""

import os
import sys

# numba's parallel kernels (the convolution, the dense layer's products) run between BLAS
# calls. OpenMP's threads spin for a while after each parallel loop and steal
# the cores from the BLAS call that follows; the workqueue layer does not spin.
# A user's own NUMBA_THREADING_LAYER wins. numba is not imported here: importing the
# package stays instant, so the command line can meet a Ctrl-C while numpy and numba
# load with its own message (numba reads the variable when it loads).
if "NUMBA_THREADING_LAYER" not in os.environ:
    if "numba" in sys.modules:
        sys.modules["numba"].config.THREADING_LAYER = "workqueue"
    else:
        os.environ["NUMBA_THREADING_LAYER"] = "workqueue"

__version__ = "0.1.0"
