"""Evaluation: top-k error, loss over a data set, and the paper's 10-crop test.

May import: `alexnet.data`, `alexnet.model`, minigrad's public API, NumPy, tqdm, the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

import minigrad.functional as F
from alexnet import data
from alexnet.model import AlexNet
from minigrad import Tensor, backend, no_grad


def top_k_error(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose label is not among the k highest scores. logits: (N, K), labels: (N,)."""
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"top_k_error expects logits (N, K) and labels (N,), got {logits.shape} and {labels.shape}")
    k = min(k, logits.shape[1])
    # argpartition finds the top k without sorting whole rows.
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    hit = (top == labels[:, None]).any(axis=1)
    return float(1.0 - hit.mean())


@dataclass
class EvalResult:
    """Scores of a model on a data set: mean cross-entropy, top-1 and top-5 error (fractions), image count."""

    loss: float
    top1_error: float
    top5_error: float
    count: int

    def sums(self) -> np.ndarray:
        """(4,) float64: summed loss, top-1 errors, top-5 errors and the count, what ranks add up."""
        n = self.count
        return np.array([self.loss * n, self.top1_error * n, self.top5_error * n, n], dtype=np.float64)

    @classmethod
    def from_sums(cls, sums: np.ndarray) -> EvalResult:
        """The result of summed (loss, top-1 errors, top-5 errors, count), e.g. over the ranks of a job."""
        n = max(float(sums[3]), 1.0)
        return cls(float(sums[0]) / n, float(sums[1]) / n, float(sums[2]) / n, round(float(sums[3])))

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}loss": self.loss,
            f"{prefix}top1_error": self.top1_error,
            f"{prefix}top5_error": self.top5_error,
        }


def _ten_crop_views(x: np.ndarray, size: int) -> np.ndarray:
    """The paper's 10 crops of a batch (10, B, C, size, size); for images of exactly the crop size the five
    crops coincide, so only the 2 distinct views (the image and its mirror), whose average is the same."""
    if x.shape[-2:] == (size, size):
        return np.stack([x, x[..., ::-1]])
    return data.ten_crop(x, size)


def predict_logits(
    model: AlexNet,
    images: np.ndarray,
    batch_size: int = 256,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    ten_crop: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Model outputs for a whole array of images (eval mode, no graph). images: (N, C, H, W) uint8.

    Images larger than the model's input are centre-cropped; with `ten_crop`, the
    softmax of the 10 crops (4 corners, centre, and their mirror images) is averaged
    as in the paper, and log-probabilities are returned.
    """
    was_training = model.training
    model.eval()
    size = model.config.image_size
    device = model.device
    outs = []
    labels = np.zeros(len(images), dtype=np.int64)  # iterate_batches wants labels; unused here
    batches = data.iterate_batches(images, labels, batch_size, shuffle=False, rng=None, mean=mean, std=std)
    try:
        with no_grad():
            for x, _ in tqdm(batches, total=-(-len(images) // batch_size), desc="eval", disable=not progress):
                if ten_crop:
                    views = _ten_crop_views(x, size)  # (V, B, C, size, size)
                    v, b = views.shape[:2]
                    flat = np.ascontiguousarray(views.reshape(v * b, *views.shape[2:]))
                    logits = model(Tensor(backend.to_device(flat, device)))
                    probs = F.softmax(logits, axis=1).numpy().reshape(v, b, -1).mean(axis=0)
                    outs.append(np.log(np.maximum(probs, np.float32(1e-30))))
                else:
                    if x.shape[-1] != size or x.shape[-2] != size:
                        x = np.ascontiguousarray(data.center_crop(x, size))
                    outs.append(model(Tensor(backend.to_device(x, device))).numpy())
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0, model.config.num_classes), dtype=np.float32)


def evaluate(
    model: AlexNet,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 256,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    ten_crop: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Mean cross-entropy, top-1 and top-5 error of `model` on (images, labels): (N, C, H, W) uint8, (N,)."""
    logits = predict_logits(model, images, batch_size, mean, std, ten_crop, progress)
    # With ten_crop the outputs are already the log-probabilities of the averaged softmax.
    logp = logits if ten_crop else F.log_softmax(Tensor(logits), axis=1).numpy()
    loss = float(-logp[np.arange(len(labels)), labels].mean())
    return EvalResult(loss, top_k_error(logits, labels, 1), top_k_error(logits, labels, 5), len(labels))


def evaluate_batches(
    model: AlexNet, batches: Iterable[tuple[np.ndarray, np.ndarray]], total: int | None = None, progress: bool = False
) -> EvalResult:
    """Mean cross-entropy, top-1 and top-5 error over normalised batches, e.g. `alexnet.data.eval_batches`.

    x: (B, C, S, S) float32, or (V, B, C, S, S) for V views of each image (the paper's 10 crops), whose
    softmax is averaged; y: (B,) int64. `total`: the number of batches, for the progress bar.
    """
    was_training = model.training
    model.eval()
    sums = np.zeros(4, dtype=np.float64)
    try:
        with no_grad():
            for x, y in tqdm(batches, total=total, desc="eval", disable=not progress):
                if len(y) == 0:  # this rank's share of a small last batch
                    continue
                if x.ndim == 5:
                    v, b = x.shape[:2]
                    flat = np.ascontiguousarray(x.reshape(v * b, *x.shape[2:]))
                    probs = F.softmax(model(Tensor(backend.to_device(flat, model.device))), axis=1).numpy()
                    logp = np.log(np.maximum(probs.reshape(v, b, -1).mean(axis=0), np.float32(1e-30)))
                else:
                    logits = model(Tensor(backend.to_device(np.ascontiguousarray(x), model.device)))
                    logp = F.log_softmax(logits, axis=1).numpy()
                n = len(y)
                loss = -float(logp[np.arange(n), y].sum())
                sums += [loss, top_k_error(logp, y, 1) * n, top_k_error(logp, y, 5) * n, n]
    finally:
        model.train(was_training)
    return EvalResult.from_sums(sums)


def ten_crop_notes(image_size: tuple[int, int], crop: int, trained_with_flips: bool | None) -> list[str]:
    """What a 10-crop test of these images means, when it is not the paper's 10 distinct views.

    image_size: (H, W) of the stored test images; crop: the model's input size; trained_with_flips: the
    run's `augment` setting (None when unknown).
    """
    notes = []
    views = data.distinct_ten_crop_views(*image_size, crop)
    if views < 10:
        h, w = image_size
        detail = " (the image and its mirror)" if views == 2 else ""
        notes.append(
            f"the test images are {h}x{w} and the crop {crop}x{crop}, so the 10 crops are only {views} distinct "
            f"views{detail}"
        )
    if trained_with_flips is False:
        notes.append(
            "the run was trained without flips (augmentation off), so the mirrored views are images it never "
            "saw: 10-crop can score below the centre crop"
        )
    return notes
