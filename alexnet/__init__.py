"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) rebuilt on minigrad: model, data, training, evaluation."""

__version__ = "0.1.0"

import minigrad  # noqa: F401  (imported first: it tunes OpenBLAS's threads before NumPy loads)
