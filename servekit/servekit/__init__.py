"""servekit: the framework-free core shared by every framework service.

It owns HTTP, validation, errors, MNIST loading, image preprocessing, training
jobs, checkpoints and metrics; a service adds one small ``Backend`` per model.
It never imports torch or tensorflow.
"""
