"""Substrate guidance losses and the shipped clean-image classifier (used by SAG and AdjointDPM)."""

import pytest
import torch

from bytecourse.checkpoints import checkpoint_available
from bytecourse.diffusion.classifier import (
    CHECKPOINT,
    ClassifierConfig,
    ShapesClassifier,
    accuracy,
    labelled_batch,
    load_classifier,
)
from bytecourse.diffusion.losses import AttributeLoss, GramStyleLoss, gram
from bytecourse.worlds import ShapesConfig, make_shapes


def _images(n, seed, textured=False):
    return make_shapes(n, seed, ShapesConfig(textured=textured), num_objects=1).images * 2 - 1


def test_gram_loss_is_zero_at_the_reference_and_differentiable():
    ref = _images(1, 0, textured=True)[0]
    loss = GramStyleLoss(ref)
    assert float(loss(ref[None])) < 1e-5
    x = _images(3, 1).requires_grad_(True)
    val = loss(x)
    assert val.shape == (3,) and (val > 0).all()
    (g,) = torch.autograd.grad(val.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_gram_matrix_ignores_where_things_are():
    f = torch.randn(2, 4, 6, 6)
    perm = torch.randperm(36)
    shuffled = f.flatten(2)[:, :, perm].view_as(f)
    assert torch.allclose(gram(f), gram(shuffled), atol=1e-5)


def test_attribute_loss_targets_and_bad_input():
    clf = ShapesClassifier(ClassifierConfig()).eval()
    loss = AttributeLoss(clf, "position", "left")
    x = _images(2, 2)
    assert loss(x).shape == (2,) and (loss(x) > 0).all()
    assert AttributeLoss(clf, "colour", "red").target == 0
    for head, target in (("size", 0), ("colour", "purple"), ("shape", 7)):
        with pytest.raises(ValueError):
            AttributeLoss(clf, head, target)
    with pytest.raises(ValueError):
        clf(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError):
        GramStyleLoss(torch.zeros(2, 3, 8, 8))


def test_labels_are_exact():
    x, labels = labelled_batch(64, 0)
    assert x.min() >= -1 and x.max() <= 1
    assert set(labels["position"].tolist()) <= {0, 1, 2} and len(set(labels["position"].tolist())) == 3


@pytest.mark.skipif(not checkpoint_available(CHECKPOINT), reason="shipped classifier not present")
def test_shipped_classifier_is_accurate_on_clean_images():
    acc = accuracy(load_classifier(), seeds=[7], n=256)
    assert acc["colour"] >= 0.98 and acc["shape"] >= 0.95 and acc["position"] >= 0.95, acc
