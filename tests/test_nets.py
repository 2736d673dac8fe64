"""GeoGAN networks: shapes at 64/128/256 px, the warp's geometry, heatmaps, init, save/load, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from geogan.model import load_generator, remove, save_generator, to_tensor, to_uint8, transfer
from geogan.nets import (COMPILED, HEATMAP_CHANNELS, Discriminator, FlowNet, Generator, build_nets, count_parameters,
                         landmark_heatmaps, sample_at, warp)
from geogan.nets.flow import identity_grid
from tests.helpers.training import tiny_model

REFERENCE = tiny_model(ngf=16, ndf=64, n_blocks=3, n_scales=3, flow_scale=0.1, flow_inputs="rgb", local_ndf=0)


# Small convs gain little from a second thread; on a busy machine spinning OpenMP threads cost several times.
pytestmark = pytest.mark.usefixtures("one_thread")


def _images(b: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def _small_gen(**kw) -> Generator:
    torch.manual_seed(0)
    return build_nets(tiny_model(ngf=8, ndf=8, n_blocks=1, n_scales=3, **kw)).generator


@pytest.mark.parametrize("size", [64, 128])
def test_cycle_shapes(size):
    gen = _small_gen()
    x_a, x_b = _images(2, size), _images(2, size, 1)
    out = gen(x_a, x_b, 0.1)
    img = (2, 3, size, size)
    for name in ("x_warp", "x_blend", "x_out", "x_removed", "x_warp_rec", "x_rec_b", "x_rec_a"):
        assert getattr(out, name).shape == img, name
        assert getattr(out, name).abs().max() <= 1.0 + 1e-6, name
    for name in ("flow_ab", "flow_rec"):
        assert getattr(out, name).shape == (2, 2, size, size)
    for name in ("mask", "mask_b", "mask_rec"):
        m = getattr(out, name)
        assert m.shape == (2, 1, size, size) and m.min() >= 0 and m.max() <= 1
    assert out.x_a is x_a and out.x_b is x_b


def test_transfer_shapes_256():
    gen = _small_gen()
    out = gen.transfer(_images(1, 256), _images(1, 256, 1), 0.1)
    assert out.x_out.shape == (1, 3, 256, 256) and out.flow_ab.shape == (1, 2, 256, 256)
    assert out.mask.shape == (1, 1, 256, 256)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_discriminator_shapes(size):
    torch.manual_seed(0)
    disc = Discriminator(ndf=8, n_scales=3)
    outs = disc(_images(2, size))
    assert len(outs) == 3
    for i, (patch, logit) in enumerate(outs):
        side = size // 8 // 2**i
        assert patch.shape == (2, 1, side, side)
        assert logit.shape == (2,)


def test_bad_image_size_is_a_clear_error():
    gen = _small_gen()
    with pytest.raises(ValueError, match="multiples of 8"):
        gen(_images(1, 60), _images(1, 60), 0.0)


@pytest.mark.parametrize("size", [64, 256])
def test_warp_identity(size):
    # Exact up to float32 rounding of grid_sample's normalised coordinates (measured 6e-6 at
    # 64 px, 3e-5 at 256 px); a half-pixel align_corners mistake would be off by ~0.1.
    x = _images(2, size)
    y = warp(x, torch.zeros(2, 2, size, size))
    torch.testing.assert_close(y, x, atol=1e-4, rtol=0)
    const = torch.full((1, 3, size, size), 0.25)
    assert torch.equal(warp(const, torch.zeros(1, 2, size, size)), const)


def test_identity_grid_convention():
    grid = identity_grid(1, 5, 9)
    assert grid.shape == (1, 5, 9, 2)
    assert grid[0, 0, 0].tolist() == [-1.0, -1.0] and grid[0, -1, -1].tolist() == [1.0, 1.0]
    assert torch.all(grid[0, 0, 1:, 0] > grid[0, 0, :-1, 0])  # channel 0 is x (varies along W)


@pytest.mark.parametrize("axis", [0, 1])
def test_warp_translation_moves_a_dot(axis):
    # out(p) = b(p + flow): a constant flow of +2 px shows b's dot 2 px earlier along that axis.
    size = 64
    b = torch.full((1, 1, size, size), -1.0)
    b[0, 0, 30, 40] = 1.0  # (y, x)
    flow = torch.zeros(1, 2, size, size)
    flow[:, axis] = 2 * 2 / (size - 1)
    out = warp(b, flow)
    y, x = divmod(int(out.flatten().argmax()), size)
    assert (x, y) == ((38, 30) if axis == 0 else (40, 28))
    assert float(out.max()) == pytest.approx(1.0, abs=1e-4)


def test_sample_at_matches_pixels():
    field = torch.randn(2, 3, 16, 16)
    px = torch.tensor([[[0, 0], [15, 15], [3, 7]], [[5, 2], [0, 15], [15, 0]]], dtype=torch.float32)  # (x, y)
    norm = px * 2 / 15 - 1
    got = sample_at(field, norm)  # (B, P, C)
    for b in range(2):
        for p in range(3):
            x, y = px[b, p].long().tolist()
            torch.testing.assert_close(got[b, p], field[b, :, y, x], atol=1e-5, rtol=0)


def test_landmark_heatmaps():
    size = 64
    lm_px = torch.rand(2, 68, 2) * 50 + 7
    lm_px[0, 30] = torch.tensor([20.0, 45.0])  # a nose point, exactly on a pixel
    lm_px[1, :17] = float("nan")  # missing jaw
    heat = landmark_heatmaps(lm_px * 2 / (size - 1) - 1, size)
    assert heat.shape == (2, HEATMAP_CHANNELS, size, size) and heat.dtype == torch.float32
    assert torch.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert float(heat[0, 2, 45, 20]) == pytest.approx(1.0, abs=1e-4)  # channel 2 = nose
    assert float(heat[1, 0].max()) == 0.0  # the missing jaw contributes nothing


def test_flow_with_landmark_heatmaps():
    gen = _small_gen(flow_inputs="rgb+landmarks")
    assert gen.flow.extra_in == HEATMAP_CHANNELS
    x_a, x_b = _images(2, 64), _images(2, 64, 1)
    heat = landmark_heatmaps(torch.rand(2, 68, 2) * 2 - 1, 64)
    out = gen(x_a, x_b, 0.0, heat_a=heat, heat_b=heat.flip(0))
    assert out.flow_rec.shape == (2, 2, 64, 64)
    with pytest.raises(ValueError, match="heat_a and heat_b"):
        gen(x_a, x_b, 0.0)
    with pytest.raises(ValueError, match="flow_inputs"):
        build_nets(tiny_model(flow_inputs="landmarks"))


def test_build_is_deterministic_and_sized():
    torch.manual_seed(3)
    a = build_nets(REFERENCE)
    torch.manual_seed(3)
    b = build_nets(REFERENCE)
    for (k, v), w in zip(a.generator.state_dict().items(), b.generator.state_dict().values()):
        assert torch.equal(v, w), k
    # Reference sizes: D 14.1 M; G 4.2 M there counts three decoders it never uses (see report).
    assert count_parameters(a.discriminator) == 14_122_374
    assert count_parameters(a.generator) == 3_659_801


def test_refine_weight_zero_is_the_blend():
    gen = _small_gen()
    out = gen.transfer(_images(2, 64), _images(2, 64, 1), 0.0)
    torch.testing.assert_close(out.x_out, out.x_blend.clamp(-1, 1))


def test_channels_last_matches():
    gen = _small_gen()
    x_a, x_b = _images(2, 64), _images(2, 64, 1)
    ref = gen(x_a, x_b, 0.1)
    gen_cl = gen.to(memory_format=torch.channels_last)
    got = gen_cl(x_a.contiguous(memory_format=torch.channels_last), x_b.contiguous(memory_format=torch.channels_last), 0.1)
    torch.testing.assert_close(got.x_rec_b, ref.x_rec_b, atol=1e-4, rtol=1e-4)


def test_bf16_autocast_keeps_geometry_in_fp32():
    gen = _small_gen()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gen(_images(1, 64), _images(1, 64, 1), 0.1)
    assert out.x_warp.dtype == torch.float32
    assert all(torch.isfinite(t.float()).all() for t in (out.x_out, out.x_removed, out.x_rec_a, out.x_rec_b))


@pytest.mark.slow
def test_compiled_generator_with_every_lever_equals_eager():
    """The whole training cycle, channels_last, built with the compiled kernels and traced as Inductor
    traces it (aot_eager: forward and backward graphs, no kernels generated), takes every path of
    geogan.nets.fast_ops and computes what the stock kernels compute eagerly: outputs and every gradient."""
    from geogan.nets.layers import Conv2d, ReflectionPad, Upsample2x, use_kernels

    torch._dynamo.reset()
    gen = _small_gen().double().to(memory_format=torch.channels_last)
    modules = list(gen.modules())
    assert any(isinstance(m, Conv2d) and m.fits_blocks for m in modules)
    assert any(isinstance(m, ReflectionPad) for m in modules) and any(isinstance(m, Upsample2x) for m in modules)
    x_a, x_b = (_images(2, 32, s).double().contiguous(memory_format=torch.channels_last) for s in (0, 1))

    def run(forward):
        gen.zero_grad()
        out = forward(x_a, x_b, 0.1)
        tensors = [out.x_out, out.mask, out.flow_ab, out.x_removed, out.x_rec_a, out.x_rec_b]
        sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view(t.shape)).sum() for t in tensors).backward()
        return [t.detach() for t in tensors], {n: p.grad.clone() for n, p in gen.named_parameters() if p.grad is not None}

    eager_out, eager_grads = run(gen)
    use_kernels(gen, COMPILED)
    comp_out, comp_grads = run(torch.compile(gen, backend="aot_eager"))
    for e, c in zip(eager_out, comp_out):
        torch.testing.assert_close(c, e, rtol=1e-9, atol=1e-9)
    assert eager_grads.keys() == comp_grads.keys()
    for name, g in eager_grads.items():
        torch.testing.assert_close(comp_grads[name], g, rtol=1e-7, atol=1e-9, msg=name)


@pytest.mark.slow
def test_no_graph_breaks():
    # Dynamo tracing only (backend "eager"): fails on any graph break or data-dependent branch.
    gen = _small_gen()
    compiled = torch.compile(gen, backend="eager", fullgraph=True)
    out = compiled(_images(2, 64), _images(2, 64, 1), 0.1)
    assert out.x_rec_a.shape == (2, 3, 64, 64)


def test_reference_size_generator_trains_on_cpu():
    # Reference sizes (ngf 16, 3 blocks), 64 px, batch 2: the whole cycle forward + backward
    # reaches every parameter. Its CPU time is printed, not asserted (tests assert no timings).
    torch.manual_seed(0)
    gen = build_nets(REFERENCE).generator
    x_a, x_b = _images(2, 64), _images(2, 64, 1)

    def step():
        out = gen(x_a, x_b, 0.1)
        (out.x_rec_a.mean() + out.x_rec_b.mean() + out.mask.mean() + out.flow_ab.mean()).backward()

    step()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(2):
        t0 = time.process_time()
        step()
        times.append(time.process_time() - t0)
    missing = [n for n, p in gen.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing[:5]}"
    print(f"reference-size cycle, 64 px, batch 2, forward + backward: {min(times):.2f} s CPU time")


def test_save_load_roundtrip(tmp_path):
    gen = _small_gen(flow_inputs="rgb+landmarks")
    path = save_generator(tmp_path / "m" / "generator.pt", gen,
                          {"attribute": "Mustache", "resolution": np.int64(64), "out": tmp_path})
    loaded, meta = load_generator(path)
    assert meta["attribute"] == "Mustache" and meta["resolution"] == 64 and meta["out"] == str(tmp_path)
    assert meta["net"] == {"ngf": 8, "n_blocks": 1, "flow_scale": 0.1, "flow_extra_in": HEATMAP_CHANNELS}
    assert not loaded.training
    for (k, v), w in zip(gen.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(v, w), k
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_generator(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_generator(tmp_path / "missing.pt")


def test_inference_api():
    gen = _small_gen()
    gen.train()
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    x = to_tensor(images)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), images)
    assert to_tensor(images[0]).shape == (1, 3, 64, 64)
    out = transfer(gen, x[:1], x[1:], 0.1)
    assert gen.training  # the caller's mode is restored
    assert not out.x_out.requires_grad and out.x_out.shape == (1, 3, 64, 64)
    y = remove(gen, x)
    assert y.shape == x.shape and not y.requires_grad
    # without a mask, F gets the mask net's region of b transferred onto itself
    self_mask = transfer(gen, x, x, 0.0).mask
    torch.testing.assert_close(remove(gen, x, self_mask), y)
    with pytest.raises(TypeError, match="uint8"):
        to_tensor(images.astype(np.float32))


def test_flownet_alone():
    torch.manual_seed(0)
    net = FlowNet(ngf=8, n_blocks=1, flow_scale=0.1)
    flow = net(_images(2, 64), _images(2, 64, 1))
    assert flow.shape == (2, 2, 64, 64)
