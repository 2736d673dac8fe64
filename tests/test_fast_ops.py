"""The exact layer rewrites of `geogan.nets.fast_ops` (what `train.compile` runs) against torch's own layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geogan.nets import COMPILED


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
