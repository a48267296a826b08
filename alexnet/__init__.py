"""AlexNet (Krizhevsky, Sutskever & Hinton, 2012) rebuilt on minigrad: model, data, training, evaluation.

Modules, in the order a reader meets them (each imports only modules above it, and minigrad's public API):

- `model`: the paper's network and its small variants, built by one function; the layer table.
- `data/`: the host-side data pipeline (NumPy + Pillow): IDX files, Fashion-MNIST, transforms, batches,
  image folders.
- `config`: the settings of a training run, their defaults and allowed ranges.
- `checkpoint`: the checkpoint file format, written atomically.
- `run_data`: which data a run reads, its validation split and normalisation.
- `evaluate`: top-k error, loss, the paper's 10-crop test.
- `runs`: a run folder's files (config, metrics, checkpoints) and loading a trained model.
- `train`: the training loop in named steps (set-up or resume, one epoch, end of epoch, final test).
- `inference`: a trained model applied to image files (probabilities, fc7 features).
- `plots`, `figures`: matplotlib figures, and the figures of a run folder.
- `arguments`, `cli`: the `alexnet` command's parser (flags, ranges, examples) and its commands;
  `__main__` makes `python -m alexnet` the same command.
"""

__version__ = "0.1.0"
