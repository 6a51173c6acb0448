import pytest
import torch

from bytecourse.oracle import (
    OracleConfig,
    average_precision,
    box_iou,
    caption_accuracy,
    connected_components,
    detect_objects,
    realism,
)
from bytecourse.worlds import MotionConfig, ShapesConfig, make_motion, make_shapes


@pytest.mark.parametrize("textured", [False, True])
def test_oracle_on_clean_world_images(textured):
    b = make_shapes(400, seed=11, config=ShapesConfig(textured=textured))
    cfg = OracleConfig(textured=textured)
    det = detect_objects(b.images, cfg)
    acc = caption_accuracy(b.captions, det)
    assert acc["colour"] >= 0.99 and acc["shape"] >= 0.99 and acc["exact"] >= 0.99, acc
    assert torch.all(realism(b.images, cfg) == 1.0)
    # boxes and centroids are exact
    gt = [b.boxes[i][b.present[i]] for i in range(len(b))]
    pred = [torch.tensor([o.box for o in d]) for d in det]
    scores = [torch.tensor([float(o.area) for o in d]) for d in det]
    assert average_precision(pred, scores, gt, 0.5) == pytest.approx(1.0)
    assert average_precision(pred, scores, gt, 0.95) >= 0.99


def test_oracle_degrades_gracefully_under_noise():
    b = make_shapes(300, seed=4)
    g = torch.Generator().manual_seed(0)
    sigmas = [0.0, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3]
    real, shape = [], []
    for s in sigmas:
        x = (b.images + s * torch.randn(b.images.shape, generator=g)).clamp(0, 1)
        real.append(float(realism(x).mean()))
        shape.append(caption_accuracy(b.captions, detect_objects(x))["shape"])
    assert real[0] == 1.0 and real[1] > 0.97  # mild noise is tolerated...
    assert all(a >= b - 0.01 for a, b in zip(real, real[1:]))  # ...realism falls monotonically...
    assert real[-1] < 0.2  # ...and heavy noise is recognised as such
    assert shape[3] > 0.95 and shape[-1] < shape[0] - 0.3  # attributes survive moderate noise, then degrade


def test_realism_catches_speckle_and_blobs():
    b = make_shapes(64, seed=2, num_objects=1)
    speckled = b.images.clone()
    speckled[:, :, ::3, ::3] = torch.rand(speckled[:, :, ::3, ::3].shape, generator=torch.Generator().manual_seed(1))
    assert realism(speckled).mean() < 0.95
    blob = torch.full((1, 3, 32, 32), 0.2)
    blob[0, :, 5:20, 5:9] = torch.tensor([0.9, 0.15, 0.15])[:, None, None]  # a red 15×4 bar is no world shape
    blob[0, :, 22:25, 20:30] = torch.tensor([0.15, 0.3, 0.95])[:, None, None]
    d = detect_objects(blob)[0]
    assert len(d) == 2 and not any(o.well_formed for o in d)
    assert realism(blob)[0] == pytest.approx(1 - (15 * 4 + 3 * 10) / 1024)


def test_oracle_boxes_on_motion_frames():
    m = make_motion(32, seed=5, config=MotionConfig())
    frames = m.videos.flatten(0, 1)
    det = detect_objects(frames)
    cols = m.colours.repeat_interleave(8, 0)
    gt_boxes = m.boxes.flatten(0, 1)
    vis = m.visible.flatten(0, 1)
    area = m.instance_masks.flatten(0, 1).flatten(2).sum(-1)
    ious = []
    for i, d in enumerate(det):
        for k in (vis[i] & (area[i] >= 6)).nonzero().flatten().tolist():
            hits = [o for o in d if o.colour == int(cols[i, k])]
            assert hits, "a visible object was not detected"
            ious.append(float(box_iou(torch.tensor([hits[0].box]), gt_boxes[i, k][None])[0, 0]))
    # an object cut in two by a nearer one is found as its larger piece, hence not all IoUs are 1
    assert sum(i > 0.9 for i in ious) / len(ious) > 0.95 and sum(ious) / len(ious) > 0.95


def test_box_iou_and_ap_basics():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    b = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5], [0.6, 0.6, 1.0, 1.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    gt = [torch.tensor([[0.0, 0.0, 0.5, 0.5]]), torch.tensor([[0.5, 0.5, 1.0, 1.0]])]
    # one hit, one miss with lower score, one image without prediction → AP 0.5
    pred = [torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.6, 0.0, 1.0, 0.2]]), torch.zeros(0, 4)]
    scores = [torch.tensor([0.9, 0.1]), torch.zeros(0)]
    assert average_precision(pred, scores, gt) == pytest.approx(0.5)


def test_connected_components_counts():
    m = torch.zeros(1, 8, 8, dtype=torch.bool)
    m[0, 0:2, 0:2] = True
    m[0, 5:8, 5:8] = True
    m[0, 2, 2] = True  # diagonal neighbour joins the first blob (8-connectivity)
    labels = connected_components(m)
    assert len(labels.unique()) == 3


@pytest.mark.parametrize(
    "call",
    [
        lambda: detect_objects(torch.zeros(2, 1, 8, 8)),
        lambda: realism(torch.zeros(3, 8, 8)),
        lambda: box_iou(torch.zeros(2, 3), torch.zeros(2, 4)),
        lambda: average_precision([torch.zeros(0, 4)], [torch.zeros(0)], [torch.zeros(0, 4)]),
        lambda: caption_accuracy(["a red circle"], []),
    ],
)
def test_oracle_bad_input(call):
    with pytest.raises(ValueError):
        call()
