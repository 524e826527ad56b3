"""Training backends: ``local`` (PyTorch re-implementation) and ``sagemaker`` (the real built-in algorithm).

A backend never imports another backend; the API imports a backend only when it is used.
"""
