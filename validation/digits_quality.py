r"""Sample quality on digits: a small classifier's feature space and the Fréchet distance in it.

The classifier (:func:`train_classifier`) is an MLP ``64 → 128 → 32 → 10`` (ReLU) trained on the
training images; its 32 penultimate activations are the features. The Fréchet distance between
two sets of features with means :math:`\mu_1, \mu_2` and covariances :math:`C_1, C_2` is

.. math:: d^2 = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\big(C_1 + C_2 - 2(C_1^{1/2} C_2 C_1^{1/2})^{1/2}\big),

reported as :math:`d^2` (as FID is); the reference set is the held-out real digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FEATURES, CLASSIFIER_STEPS, CLASSIFIER_SEED = 32, 600, 1


@dataclass
class Classifier:
    """A trained digits classifier (float64 torch module), its held-out accuracy and reference statistics."""

    net: object
    accuracy: float
    mean: np.ndarray
    cov: np.ndarray

    def features(self, images: np.ndarray) -> np.ndarray:
        """Penultimate activations ``(n, FEATURES)`` of images ``(n, 8, 8)``."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64).reshape(len(images), 64))
            return self.net[:-1](x).numpy()

    def frechet(self, images: np.ndarray) -> float:
        """Fréchet distance :math:`d^2` of ``images`` to the held-out real digits (``inf`` if not finite)."""
        images = np.asarray(images, dtype=np.float64)
        if not np.all(np.isfinite(images)):
            return float("inf")
        f = self.features(images)
        return frechet_distance(f.mean(0), np.cov(f, rowvar=False), self.mean, self.cov)


def frechet_distance(mu1: np.ndarray, c1: np.ndarray, mu2: np.ndarray, c2: np.ndarray) -> float:
    """:math:`d^2` between Gaussians ``N(mu1, c1)`` and ``N(mu2, c2)`` (module docstring)."""
    root1 = _psd_root(c1)
    middle = np.linalg.eigvalsh(root1 @ c2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2.0 * np.sum(np.sqrt(np.abs(middle))))


def _psd_root(c: np.ndarray) -> np.ndarray:
    """Symmetric root of a covariance; eigenvalues of rounding size below 0 (singular features) count as 0."""
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.maximum(w, 0.0))) @ v.T


def train_classifier(train_x: np.ndarray, train_y: np.ndarray, held_x: np.ndarray, held_y: np.ndarray,
                     steps: int = CLASSIFIER_STEPS) -> Classifier:
    """Train the classifier full-batch (Adam, weight decay) and fix the held-out reference statistics."""
    import torch
    from torch import nn

    torch.manual_seed(CLASSIFIER_SEED)
    net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, FEATURES), nn.ReLU(), nn.Linear(FEATURES, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    x = torch.from_numpy(train_x.reshape(len(train_x), 64)).float()
    y = torch.from_numpy(np.asarray(train_y)).long()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net = net.to(torch.float64).eval()
    with torch.inference_mode():
        pred = net(torch.from_numpy(held_x.reshape(len(held_x), 64))).argmax(1).numpy()
    clf = Classifier(net, float(np.mean(pred == np.asarray(held_y))), np.zeros(FEATURES), np.eye(FEATURES))
    held = clf.features(held_x)
    clf.mean, clf.cov = held.mean(0), np.cov(held, rowvar=False)
    return clf
