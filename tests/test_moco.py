"""MoCo pieces against direct formulas: InfoNCE, momentum update, queue, split BN, augmentations."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coldseg.features.augment import CANDIDATES, AugmentConfig, base_view, candidate_names, resized_crop
from coldseg.features.encoder import resnet18
from coldseg.features.moco import MoCo, ProjectionHead, info_nce, update_momentum


def test_info_nce_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    k = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    queue = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    T = 0.2
    direct = []
    for i in range(4):
        pos = math.exp(float(q[i] @ k[i]) / T)
        neg = sum(math.exp(float(q[i] @ queue[j]) / T) for j in range(6))
        direct.append(-math.log(pos / (pos + neg)))
    assert float(info_nce(q, k, queue, T)) == pytest.approx(np.mean(direct), rel=1e-5)


def test_info_nce_is_minimal_when_positive_matches_and_negatives_are_opposite():
    q = torch.tensor([[1.0, 0.0]])
    # l_pos = 1, l_neg = -1 (three times), T = 1: loss = log(1 + 3 e^-2)
    assert float(info_nce(q, q, -q.repeat(3, 1), 1.0)) == pytest.approx(math.log(1 + 3 * math.exp(-2)), rel=1e-6)


def test_update_momentum_formula():
    a, b = ProjectionHead(3, 4, 2), ProjectionHead(3, 4, 2)
    before = [p.detach().clone() for p in b.parameters()]
    update_momentum(a, b, 0.9)
    for pa, pb, p0 in zip(a.parameters(), b.parameters(), before):
        assert torch.allclose(pb, 0.9 * p0 + 0.1 * pa.detach())


def test_update_momentum_m_zero_copies_and_m_one_keeps():
    a, b = ProjectionHead(3, 4, 2), ProjectionHead(3, 4, 2)
    keep = [p.detach().clone() for p in b.parameters()]
    update_momentum(a, b, 1.0)
    assert all(torch.equal(p, k) for p, k in zip(b.parameters(), keep))
    update_momentum(a, b, 0.0)
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), a.parameters()))


def test_queue_wraps_around_and_key_encoder_is_frozen():
    m = MoCo(resnet18(width=4), dim=8, K=5, generator=torch.Generator().manual_seed(0))
    assert all(not p.requires_grad for p in m.encoder_k.parameters())
    k1 = F.normalize(torch.ones(3, 8), dim=1)
    m._enqueue(k1)
    assert int(m.queue_ptr) == 3
    k2 = F.normalize(-torch.ones(3, 8), dim=1)
    m._enqueue(k2)  # fills slots 3, 4, then wraps to 0
    assert int(m.queue_ptr) == 1
    assert torch.allclose(m.queue[0], k2[2]) and torch.allclose(m.queue[1], k1[1])


def test_moco_step_changes_only_query_by_gradient():
    torch.manual_seed(0)
    m = MoCo(resnet18(width=4), dim=8, K=16, m=0.5, generator=torch.Generator().manual_seed(0))
    x = torch.rand(4, 3, 32, 32)
    k_before = [p.clone() for p in m.encoder_k.parameters()]
    q_before = [p.clone() for p in m.encoder_q.parameters()]
    loss = m(x, x.flip(-1), shuffle=torch.tensor([2, 0, 3, 1]))
    loss.backward()
    # the key encoder moved to 0.5 * old + 0.5 * query (momentum), without gradients
    for pk, pk0, pq0 in zip(m.encoder_k.parameters(), k_before, q_before):
        assert pk.grad is None
        assert torch.allclose(pk, 0.5 * pk0 + 0.5 * pq0)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder_q.parameters())


def test_split_encode_normalises_each_sub_batch_on_its_own():
    m = MoCo(resnet18(width=4), dim=8, K=16, bn_splits=2, generator=torch.Generator().manual_seed(0))
    m.train()
    x = torch.rand(8, 3, 32, 32)
    whole = m._split_encode(m.encoder_q, x)
    halves = torch.cat([m.encoder_q(x[:4]), m.encoder_q(x[4:])])
    assert torch.allclose(whole, halves, atol=1e-6)
    # and differs from one pass over the whole batch (different batch statistics)
    assert not torch.allclose(whole, m.encoder_q(x), atol=1e-4)
    # a batch that does not split into pieces of >= 2 falls back to one pass
    assert torch.allclose(m._split_encode(m.encoder_q, x[:3]), m.encoder_q(x[:3]), atol=1e-6)


def test_augmentations_keep_shape_range_and_are_seeded():
    x = torch.rand(6, 3, 32, 32)
    cfg = AugmentConfig(extra="rotation")
    a = base_view(x, torch.Generator().manual_seed(1), cfg)
    b = base_view(x, torch.Generator().manual_seed(1), cfg)
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    for name, t in CANDIDATES.items():
        y = t(x, torch.Generator().manual_seed(0))
        assert y.shape == x.shape and torch.isfinite(y).all(), name


def test_full_crop_without_flip_is_identity():
    x = torch.rand(2, 3, 16, 16)
    y = resized_crop(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    assert torch.allclose(x, y, atol=1e-5)


def test_grayscale_pools_drop_colour_candidates():
    assert "color" not in candidate_names(True) and "color" in candidate_names(False)
    with pytest.raises(ValueError, match="unknown augmentation"):
        candidate_names(False, "crop,sparkle")


def test_own_image_keys_in_the_queue_are_not_negatives():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    k = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    queue = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    ids = torch.tensor([10, 11, 12, 13])
    queue_ids = torch.tensor([11, -1, 20, 13, 11, 21])
    masked = info_nce(q, k, queue, 0.2, ids=ids, queue_ids=queue_ids)
    # direct: each query against the queue without its own image's rows
    want = []
    for i in range(4):
        keep = queue[queue_ids != ids[i]]
        logits = torch.cat([(q[i] * k[i]).sum().view(1), keep @ q[i]]) / 0.2
        want.append(torch.logsumexp(logits, 0) - logits[0])
    assert torch.allclose(masked, torch.stack(want).mean(), atol=1e-6)
    assert torch.allclose(info_nce(q, k, queue, 0.2), info_nce(q, k, queue, 0.2, ids=ids + 100, queue_ids=queue_ids))


def test_queue_remembers_the_rows_of_its_keys():
    model = MoCo(resnet18(width=4), dim=4, K=5, generator=torch.Generator().manual_seed(0))
    model._enqueue(F.normalize(torch.randn(3, 4), dim=1), torch.tensor([7, 8, 9]))
    model._enqueue(F.normalize(torch.randn(3, 4), dim=1), torch.tensor([1, 2, 3]))
    assert model.queue_ids.tolist() == [3, 8, 9, 1, 2]      # wrapped: 7 was replaced by 3
    model._enqueue(F.normalize(torch.randn(1, 4), dim=1))     # keys without rows never match
    assert model.queue_ids.tolist() == [3, -1, 9, 1, 2]


def test_feature_layer_is_checked_and_defaults_to_the_backbone():
    from coldseg.features.train import FEATURE_LAYERS, MocoConfig

    assert MocoConfig().feature_layer == "backbone" and set(FEATURE_LAYERS) == {"backbone", "head", "multiscale"}
    with pytest.raises(ValueError, match="feature_layer='neck': choose backbone, head, multiscale"):
        MocoConfig(feature_layer="neck")


def test_multiscale_features_are_every_stage_pooled_and_weighed_alike():
    torch.manual_seed(0)
    model = MoCo(resnet18(width=4), dim=4, K=8, generator=torch.Generator().manual_seed(0)).eval()
    x = torch.randn(3, 3, 32, 32)
    z = model.embed(x, "multiscale")
    stages = model.encoder_q[0].stage_features(x)
    assert [s.shape[1] for s in stages] == [4, 8, 16, 32] and z.shape == (3, 60)
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    # each stage's block is its pooled output, L2-normalised, over √4; the deepest one is the backbone's
    for (a, b), s in zip([(0, 4), (4, 12), (12, 28), (28, 60)], stages):
        assert torch.allclose(z[:, a:b] * 2, F.normalize(s, dim=1), atol=1e-5)
    assert torch.allclose(z[:, 28:] * 2, model.embed(x, "backbone"), atol=1e-5)
