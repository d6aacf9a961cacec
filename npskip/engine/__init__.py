"""The engine: the network, its layers and their backward passes, and training.

Read reference.py first, then kernels, layers, losses, optim, gradcheck, model, train.
"""
