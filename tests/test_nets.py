"""GeoGAN networks: shapes at 64/128/256 px, the warp's geometry, heatmaps, init, save/load, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("banded", [False, True])
def test_instance_norm_is_torchs_eager_and_compiled(channels_last, banded):
    """The written-out norms that compiled graphs use equal nn.InstanceNorm2d, values and gradients.

    The compiled graph must hold no instance/batch-norm op (that op forces NCHW and made the
    compiled step copy layouts, benchmarks/NOTES.md run 11), and the output keeps the input's layout.
    The banded norm is checked on an image of 3 bands of rows.
    """
    from geogan.nets.fast_ops import Kernels, norm_bands
    from geogan.nets.layers import InstanceNorm

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    shape = (2, 4, 96, 128) if banded else (3, 8, 16, 12)
    assert norm_bands(*shape[2:]) == (3 if banded else 1)
    x = (torch.randn(shape, dtype=torch.float64) * 3 + 1).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(shape, dtype=torch.float64)
    ref = torch.nn.InstanceNorm2d(shape[1])(x)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    ops: list[str] = []
    norm, written = InstanceNorm(), InstanceNorm(kernels=Kernels(instance_norm=True, norm_bands=banded))
    eager = norm(x)
    compiled = torch.compile(written, backend=_graph_ops(ops), fullgraph=True)(x)
    assert ops and not [op for op in ops if "norm" in op], ops
    for y in (eager, written(x), compiled):  # float64: equal up to rounding
        torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(torch.autograd.grad(y, x, grad)[0], g_ref, rtol=1e-10, atol=1e-10)
    assert compiled.is_contiguous(memory_format=fmt)
    assert not list(norm.parameters()) and not list(norm.buffers())  # checkpoints are nn.InstanceNorm2d's


def test_norm_bands_divide_the_rows():
    from geogan.nets.fast_ops import norm_bands

    assert [norm_bands(s, s) for s in (32, 64, 128, 256)] == [1, 1, 4, 16]
    assert norm_bands(97, 128) == 1  # a prime height: one band, the plain norm


def _graph_ops(ops: list[str]):
    """A torch.compile backend that records the traced graph's ops and runs it eagerly."""

    def backend(gm, example_inputs):
        ops.extend(str(n.target) for n in gm.graph.nodes if n.op in ("call_function", "call_method"))
        return gm

    return backend


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("pad", [1, 3])
def test_reflection_pad_backward_fold_equals_torchs(pad, channels_last):
    """ReflectionPad's compiled kernel's hand-written backward (slices, flips, adds) is torch's, both layouts.

    aot_eager traces the backward through AOTAutograd, as Inductor does; the graph must hold
    our autograd.Function (so the stock backward, which copied to NCHW, is not the one used).
    """
    from geogan.nets.layers import ReflectionPad

    torch._dynamo.reset()  # each case compiles the same forward: do not run into dynamo's recompile limit
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 5, 9, 11, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(2, 5, 9 + 2 * pad, 11 + 2 * pad, dtype=torch.float64)
    ref = torch.nn.ReflectionPad2d(pad)(x)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    ops: list[str] = []
    torch.compile(ReflectionPad(pad, kernels=COMPILED), backend=_graph_ops(ops), fullgraph=True)(x)
    assert any("autograd_function_apply" in op for op in ops), ops
    y = torch.compile(ReflectionPad(pad, kernels=COMPILED), backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(y, x, grad)[0], g_ref, rtol=1e-12, atol=1e-12)
    stock = ReflectionPad(pad, kernels=COMPILED.without(["fold_pad"]))  # the benchmark's lever off: the stock op
    torch.testing.assert_close(torch.compile(stock, backend="aot_eager")(x), ref, rtol=0, atol=0)


def test_pad_layout_keeps_a_cuda_graphs_padded_tensor_channels_last_with_the_same_values():
    """With `pad_layout`, the padded tensor a compiled CUDA graph records is channels_last, as its input.

    A graph's strides come from fake tensors, and reflection padding's meta function returns NCHW for
    CUDA tensors (CPU ones keep channels_last); the compiled backward then gave cuDNN NCHW padded inputs,
    copied back inside each conv's backward (benchmarks/NOTES.md run 42). Fake CUDA tensors need no GPU.
    Values and gradients stay torch's.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    from geogan.nets.fast_ops import reflection_pad_folded
    from geogan.nets.layers import ReflectionPad

    with FakeTensorMode():
        x = torch.empty(2, 16, 8, 8, device="cuda").contiguous(memory_format=torch.channels_last)
        assert reflection_pad_folded(x, 1, keep_layout=True).is_contiguous(memory_format=torch.channels_last)
        nchw = torch.empty(2, 16, 8, 8, device="cuda")
        assert reflection_pad_folded(nchw, 1, keep_layout=True).is_contiguous()  # an NCHW input stays NCHW
    torch._dynamo.reset()
    pad = ReflectionPad(1, kernels=COMPILED.with_levers(["pad_layout"]))
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = torch.compile(pad, backend="aot_eager", fullgraph=True)(x)
    ref = torch.nn.ReflectionPad2d(1)(x)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    grad = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(y, x, grad)[0], torch.autograd.grad(ref, x, grad)[0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("in_ch", "out_ch", "kernel", "stride"), [(3, 16, 7, 1), (32, 3, 7, 1), (3, 8, 3, 2), (16, 16, 3, 1)])
def test_channel_padded_conv_equals_nn_conv(in_ch, out_ch, kernel, stride):
    """With the compiled kernels, geogan's Conv2d zero-pads thin channel counts to 8: same values, gradients and state_dict."""
    from geogan.nets.layers import Conv2d

    torch._dynamo.reset()
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2).double().to(memory_format=torch.channels_last)
    conv = Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, kernels=COMPILED).double().to(memory_format=torch.channels_last)
    conv.load_state_dict(ref.state_dict())
    assert {k: v.shape for k, v in conv.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    x = torch.randn(2, in_ch, 16, 16, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    y_ref = ref(x)
    grad = torch.randn_like(y_ref)
    g_ref = torch.autograd.grad(y_ref, [x, ref.weight, ref.bias], grad)
    ops: list[str] = []
    y = torch.compile(conv, backend=_graph_ops(ops), fullgraph=True)(x)
    padded = in_ch % 8 or out_ch % 8
    assert any("pad" in op for op in ops) == bool(padded), ops
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)  # float64: equal up to rounding
    assert y.shape == y_ref.shape
    for g, r in zip(torch.autograd.grad(y, [x, conv.weight, conv.bias], grad), g_ref):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("in_ch", "out_ch", "kernel", "size"), [(3, 16, 7, 262), (32, 3, 7, 38), (48, 2, 7, 20), (16, 16, 3, 18),
                                                          (6, 16, 5, 14)])
def test_space_to_depth_conv_equals_conv(in_ch, out_ch, kernel, size):
    """A thin stride-1 conv computed on 2x2 pixel blocks is the same conv (float64: exact up to rounding)."""
    from geogan.nets.fast_ops import space_to_depth_conv

    torch.manual_seed(0)
    x = torch.randn(2, in_ch, size, size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(out_ch, in_ch, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out_ch, dtype=torch.float64, requires_grad=True)
    ref = F.conv2d(x, w, b)
    y = space_to_depth_conv(x, w, b)
    assert y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(ref)
    for g, r in zip(torch.autograd.grad(y, [x, w, b], grad), torch.autograd.grad(ref, [x, w, b], grad)):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


def test_compiled_conv_takes_the_block_path_only_where_it_applies():
    from geogan.nets.layers import Conv2d

    assert Conv2d(3, 16, 7).fits_blocks and Conv2d(32, 3, 7).fits_blocks and Conv2d(6, 16, 5).fits_blocks
    assert not Conv2d(32, 32, 7).fits_blocks  # wide enough for cuDNN
    assert not Conv2d(16, 16, 3).fits_blocks  # 3x3: slower on blocks (benchmarks/NOTES.md run 15)
    assert not Conv2d(3, 16, 7, padding=3).fits_blocks and not Conv2d(3, 16, 7, stride=2).fits_blocks
    torch._dynamo.reset()
    conv = Conv2d(3, 4, 5, kernels=COMPILED)
    for size, blocks in ((10, True), (9, False)):  # odd sizes fall back to the plain (channel-padded) conv
        ops: list[str] = []
        x = torch.randn(1, 3, size, size)
        y = torch.compile(conv, backend=_graph_ops(ops), fullgraph=True, dynamic=False)(x)
        assert any("pixel_unshuffle" in op for op in ops) == blocks, ops
        torch.testing.assert_close(y, F.conv2d(x, conv.weight, conv.bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
def test_written_out_upsampling_equals_interpolate(channels_last):
    """With the compiled kernels, Upsample2x is its fixed stencil: the values and gradients of F.interpolate (bilinear x2)."""
    from geogan.nets.layers import Upsample2x

    torch._dynamo.reset()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 5, 7, 9, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
    ref = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    grad = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    ops: list[str] = []
    torch.compile(Upsample2x(COMPILED), backend=_graph_ops(ops), fullgraph=True)(x)
    assert ops and not [op for op in ops if "interpolate" in op or "upsample" in op], ops
    y = torch.compile(Upsample2x(COMPILED), backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(y, x, grad)[0], g_ref, rtol=1e-12, atol=1e-12)
    assert y.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(Upsample2x()(x), ref, rtol=0, atol=0)  # the stock kernels: the stock op


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
