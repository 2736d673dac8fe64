"""Training batches: deterministic by step, sharded like the 1-process batch, flips mirror landmarks."""

from __future__ import annotations

import numpy as np
import torch

from geogan.data.dataset import FLIP_68, DomainTensors, PreparedData, UnpairedSampler, to_model_landmarks, to_pixel_landmarks


def _data(n=10, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    lm = rng.uniform(0, size - 1, (n, 68, 2)).astype(np.float32)
    return PreparedData(images=images, landmarks=lm)


def _sampler(data, rank=0, world=1, batch=4, flip=True):
    dev = torch.device("cpu")
    return UnpairedSampler(DomainTensors(data, range(0, 6), dev), DomainTensors(data, range(6, 10), dev),
                           batch_size=batch, seed=1, rank=rank, world_size=world, augment_flip=flip)


def test_flip_permutation_is_an_involution():
    assert sorted(FLIP_68) == list(range(68))
    assert all(FLIP_68[FLIP_68[i]] == i for i in range(68))
    assert FLIP_68[36] == 45 and FLIP_68[48] == 54 and FLIP_68[30] == 30


def test_batches_are_a_function_of_the_step():
    data = _data()
    b1, b2 = _sampler(data).batch(7), _sampler(data).batch(7)
    assert torch.equal(b1.x_a, b2.x_a) and torch.equal(b1.lm_b, b2.lm_b)
    assert not torch.equal(_sampler(data).batch(8).x_a, b1.x_a)


def test_ranks_shard_the_global_batch():
    data = _data()
    full = _sampler(data).batch(3)
    parts = [_sampler(data, rank=r, world=2).batch(3) for r in range(2)]
    assert torch.equal(torch.cat([p.x_a for p in parts]), full.x_a)
    assert torch.equal(torch.cat([p.lm_b for p in parts]), full.lm_b)


def test_epoch_covers_every_image_once():
    data = _data()
    s = _sampler(data, batch=2, flip=False)
    seen = torch.cat([s.batch(k).x_a for k in range(3)])  # 6 images in domain A = one epoch
    seen_u8 = ((seen + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert sorted(x.tobytes() for x in seen_u8) == sorted(x.tobytes() for x in data.images[:6])


def test_flip_moves_landmarks_with_the_image():
    size = 16
    img = np.zeros((1, size, size, 3), np.uint8)
    lm = np.zeros((1, 68, 2), np.float32)
    lm[0, 36] = (3, 5)  # left eye outer corner, marked in the image
    img[0, 5, 3] = 255
    dom = DomainTensors(PreparedData(images=img, landmarks=lm), [0], torch.device("cpu"))
    x, lm_f = dom.gather(torch.tensor([0]), torch.tensor([True]))
    px = to_pixel_landmarks(lm_f, size)[0, 45]  # after the flip, point 36 becomes point 45
    assert torch.allclose(px, torch.tensor([size - 1 - 3.0, 5.0]))
    assert x[0, 0, 5, size - 1 - 3] == 1.0


def test_landmark_normalisation_round_trip():
    p = torch.tensor([[0.0, 63.0], [31.5, 10.0]])
    n = to_model_landmarks(p, 64)
    assert torch.allclose(n[0], torch.tensor([-1.0, 1.0])) and torch.allclose(to_pixel_landmarks(n, 64), p)
