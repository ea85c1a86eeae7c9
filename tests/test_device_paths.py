"""The GPU paths of torch_gpt, checked where a CPU can check them: GELU off the CPU, dropout masks drawn on
the device, nccl's barrier, DDP inside torch.compile, MPS's limits, a step under bf16 autocast, eager
and compiled, and the CUDA graph's plumbing, with a stand-in for the graph."""
import argparse
import contextlib
import os
import types
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import torch_gpt.train as trainer
from numpy_gpt.config import GPTConfig
from numpy_gpt.machinery.errors import UserError
from bounds import U32, UBF16, record_margin
from numpy_gpt.machinery.rounding import gamma_tilde, path_roundings
from torch_gpt.model import GPT

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def test_device_dropout_masks():
    p, seed = 0.25, 1234
    masks = trainer.device_dropout_masks(CONFIG, 8, 16, p, seed, torch.device("cpu"), torch.float32)
    assert len(masks) == 2 * CONFIG.n_layer
    assert all(m.shape == (8, 16, CONFIG.n_embd) and m.dtype == torch.float32 for m in masks)
    values = torch.cat([m.flatten() for m in masks])
    assert set(values.unique().tolist()) == {0.0, float(np.float32(1.0 / (1 - p)))}
    dropped = (values == 0).double().mean().item()       # 8,192 draws: the standard error is 0.005
    assert abs(dropped - p) < 0.03, dropped
    again = trainer.device_dropout_masks(CONFIG, 8, 16, p, seed, torch.device("cpu"), torch.float32)
    other = trainer.device_dropout_masks(CONFIG, 8, 16, p, seed + 1, torch.device("cpu"), torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(masks, again))
    assert not all(torch.equal(a, b) for a, b in zip(masks, other))
    assert not torch.equal(masks[0], masks[1])                   # each mask its own draw


class Args:
    grad_accum, batch_size, seed, dropout = 2, 3, 7, 0.1


def test_micro_batches_draw_masks_on_the_device_off_the_cpu_in_float32(monkeypatch):
    calls = []

    def fake(config, B, T, p, seed, device, dtype):
        calls.append((B, T, p, seed, device.type))
        return ["on the device"]

    monkeypatch.setattr(trainer, "device_dropout_masks", fake)
    ids = np.arange(200) % CONFIG.vocab_size
    batches = trainer.micro_batches(ids, Args, 5, 1, CONFIG, torch.device("meta"), torch.float32)
    assert [m for _, _, m in batches] == [["on the device"]] * 2
    assert calls == [(3, 8, 0.1, trainer.dropout_seed(7, 5, micro), "meta") for micro in (2, 3)]
    on_cpu = trainer.micro_batches(ids, Args, 5, 1, CONFIG, torch.device("cpu"), torch.float32)
    assert len(calls) == 2 and all(len(m) == 2 * CONFIG.n_layer for _, _, m in on_cpu)   # numpy_gpt's masks
    float64 = trainer.micro_batches(ids, Args, 5, 1, CONFIG, torch.device("meta"), torch.float64)
    assert len(calls) == 2              # float64 off the CPU: numpy_gpt's masks too, moved to the device
    assert all(len(m) == 2 * CONFIG.n_layer and m[0].device.type == "meta" for _, _, m in float64)


def test_nccl_barrier_names_the_gpu(monkeypatch):
    seen = []
    monkeypatch.setattr(trainer.dist, "barrier", lambda **kwargs: seen.append(kwargs))
    trainer.barrier(torch.device("cuda", 1))
    trainer.barrier(torch.device("cpu"))
    assert seen == [{"device_ids": [1]}, {}]


def test_torch_compile_wraps_ddp(tmp_path):
    """DDP first, then torch.compile around it, as PyTorch prescribes (DDPOptimizer splits the graph at
    DDP's buckets). torch.compile is lazy, so nothing is compiled here."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = GPT(CONFIG)
        wrapped = trainer.wrap_model(model, True, 2, torch.device("cpu"))
        assert isinstance(wrapped._orig_mod, DistributedDataParallel) and wrapped._orig_mod.module is model
        assert isinstance(trainer.wrap_model(model, False, 2, torch.device("cpu")), DistributedDataParallel)
        assert trainer.wrap_model(model, False, 1, torch.device("cpu")) is model
    finally:
        dist.destroy_process_group()


def test_mps_limits_are_one_line():
    mps = torch.device("mps")
    with pytest.raises(UserError, match="Apple GPUs have no float64"):
        trainer.check_device(mps, "float64", 1)
    with pytest.raises(UserError, match="no process-group backend for Apple GPUs"):
        trainer.check_device(mps, "float32", 2)
    trainer.check_device(mps, "float32", 1)
    trainer.check_device(torch.device("cpu"), "float64", 2)


def test_a_step_under_bf16_autocast():
    """The training step under autocast to bfloat16, as a GPU runs it (here on the CPU): it runs, its loss
    is within bfloat16's rounding of float32's, and every parameter gets a finite gradient.

    The bar: autocast rounds to bfloat16 (u = 2^-8) the two operands and the output of each product,
    and sums in float32: 3 roundings a product, 6 products a block (c_attn, q k^T, att v, c_proj, c_fc,
    c_proj) and lm_head, so k = 3 (6 L + 1) along a path, and the logits z move by at most
    gamma_tilde(k) max|z| (parity.compare's model; the logits are not small by cancellation at init).
    The loss, a cross-entropy, moves by at most sum_i |p_i - y_i| max|dz| <= 2 max|dz|."""
    torch.manual_seed(0)
    model = GPT(CONFIG)
    idx = torch.randint(0, CONFIG.vocab_size, (4, CONFIG.block_size))
    logits32, loss32 = model(idx, idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss16 = model(idx, idx)
    loss16.backward()
    bar = 2 * gamma_tilde(3 * (6 * CONFIG.n_layer + 1), UBF16) * logits32.abs().max().item()
    record_margin("test_a_step_under_bf16_autocast", abs(loss16.item() - loss32.item()) / bar, "loss")
    assert abs(loss16.item() - loss32.item()) <= bar
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_a_compiled_step_under_cpu_bf16_autocast():
    """--compile on a CPU, under bf16 autocast as a CPU with bfloat16 trains: the compiled model's loss and
    gradients, dropout masks given, are the eager model's within float32's rounding of the step. Autocast,
    not the compiler, decides where values are rounded to bfloat16, so both round at the same points;
    between them they compute in float32, in their own orders, each within gamma_tilde(n, 2^-24) of
    the exact value (parity.compare's model, n = path_roundings of this config): the bar is twice that,
    relative to the loss and to each gradient's norm. The same step in float32 is outside it, checked
    too, so a compiled step that lost autocast or the masks would fail."""
    try:
        trainer.check_cpu_compiler()
    except UserError as e:
        pytest.skip(str(e))
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)    # one layer: less to compile
    torch.manual_seed(0)
    model = GPT(config)
    idx = torch.randint(0, config.vocab_size, (4, config.block_size))
    masks = [(torch.rand(4, config.block_size, config.n_embd) >= 0.1).float() / 0.9 for _ in range(2 * config.n_layer)]

    def step(m, bf16=True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            _, loss = m(idx, idx, masks=masks)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return loss.item(), grads

    bar = 2 * gamma_tilde(path_roundings(config), U32)

    def margin(a, b):
        (loss_a, grads_a), (loss_b, grads_b) = a, b
        return max([abs(loss_a - loss_b) / (bar * loss_b)]
                   + [((grads_a[n] - g).norm() / (bar * g.norm())).item() for n, g in grads_b.items()])
    eager = step(model)
    compiled = margin(step(torch.compile(model)), eager)
    record_margin("test_a_compiled_step_under_cpu_bf16_autocast", compiled, "loss and gradients")
    assert compiled <= 1
    assert margin(step(model, bf16=False), eager) > 1


def test_compile_is_part_of_the_recorded_precision(monkeypatch, restore_determinism):
    """kid.pt records the precision with --compile in it, so that a resume that turns --compile on or off
    says, as one that changes --bf16 does (tests/test_loop.py), that it rounds otherwise than the run that
    never stopped."""
    monkeypatch.setattr(trainer, "check_cpu_compiler", lambda: None)      # whether this machine has one
    cpu = torch.device("cpu")
    for flags, precision in ((["--bf16", "off"], "float32"), (["--dtype", "float64"], "float64"),
                             (["--bf16", "off", "--compile"], "float32 (compiled)")):
        args = trainer.parser().parse_args(["--device", "cpu", *flags])
        assert trainer.TorchBackend(args, 0, 1, cpu).precision == precision


def test_a_cuda_graph_a_step_on_one_gpu_in_float32(restore_determinism):
    """--cuda-graph auto graphs the step on one GPU in float32, with or without bf16 autocast, and nowhere
    else: not on a CPU, not in float64 (numpy_gpt's masks, for checking), not under torchrun, not with
    --cuda-graph off. kid.pt's precision says so, as a resume that changes it rounds otherwise (its AdamW
    reads the learning rate as a float32 tensor). Only the constructor runs: it decides, touching no GPU;
    tests/test_cuda.py runs the graph."""
    for device, flags, world, graphed, precision in (
            ("cuda", [], 1, True, "bf16 autocast (CUDA graph)"),
            ("cuda", ["--bf16", "off"], 1, True, "float32 (CUDA graph)"),
            ("cuda", ["--cuda-graph", "off"], 1, False, "bf16 autocast"),
            ("cuda", ["--dtype", "float64"], 1, False, "float64"),
            ("cuda", [], 2, False, "bf16 autocast"),
            ("cpu", ["--bf16", "off"], 1, False, "float32")):
        args = trainer.parser().parse_args(["--device", device, *flags])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")         # autocast for "cuda" where there is none says so
            backend = trainer.TorchBackend(args, 0, world, torch.device(device))
        assert (backend.cuda_graph, backend.precision) == (graphed, precision), (device, flags, world)


class NoStream:
    """Stands in for a CUDA stream on a CPU, where there is nothing to wait for."""
    def wait_stream(self, other):
        pass


@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_a_graphed_step_replays_each_steps_batch_and_rate(dropout, monkeypatch):
    """GraphedStep's plumbing, run on a CPU with a stand-in for the graph: capturing runs nothing, and each
    replay runs the captured step again on the same buffers, writing its loss into the same tensor, as a
    CUDA graph does. The first WARMUP steps are launched; each later one must see its own batch and
    dropout masks (two micro-batches), copied into the buffers the graph reads, and its own learning
    rate. 8 steps end with the losses and weights of 8 launched steps, bit for bit (the rates are powers
    of 2, which float32 holds exactly: the graph's AdamW reads its rate from a float32 tensor). Without
    dropout, there are no masks to copy. tests/test_cuda.py runs the real graph."""
    from benchmarks.loops import DEFAULTS
    captured = []

    def capture(fn):
        out = torch.empty(())
        captured.append(fn)
        return types.SimpleNamespace(replay=lambda: out.copy_(fn())), out

    monkeypatch.setattr(trainer, "capture", capture)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: NoStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: NoStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    cpu = torch.device("cpu")
    args = argparse.Namespace(**{**vars(DEFAULTS), "batch_size": 4, "grad_accum": 2, "dropout": dropout})
    ids = np.random.default_rng(0).integers(0, CONFIG.vocab_size, 1000)
    runs = []
    for graphed in (False, True):
        model = GPT(CONFIG, seed=0)
        optimizer = trainer.make_optimizer(model, args, cpu)
        if graphed:
            step = trainer.GraphedStep(model, model, optimizer, contextlib.nullcontext(), args.grad_clip, cpu)
        losses = []
        for k in range(8):
            lr = 2.0 ** -(7 + k % 3)
            batches = trainer.micro_batches(ids, args, k, 0, CONFIG, cpu, torch.float32)
            if graphed:
                losses.append(step(batches, lr))
            else:
                losses.append(trainer.accumulate_gradients(model, batches, contextlib.nullcontext(), 1).detach())
                trainer.optimizer_step(model, optimizer, lr, args.grad_clip)
        runs.append((torch.stack(losses), [p.detach().clone() for p in model.parameters()]))
    assert len(captured) == 1
    (launched_losses, launched), (graphed_losses, graphed) = runs
    assert torch.equal(graphed_losses, launched_losses)
    assert all(torch.equal(a, b) for a, b in zip(graphed, launched))


def test_deterministic_mode_on_a_gpu_and_under_compile(monkeypatch, restore_determinism):
    """The trainer turns on PyTorch's deterministic mode on a GPU and under --compile (repeatable_runs;
    tests/test_cuda.py shows why), and leaves an eager CPU run as it was, already repeatable. Nothing
    here touches a GPU: the backend's constructor only decides."""
    monkeypatch.setattr(trainer, "check_cpu_compiler", lambda: None)      # whether this machine has one
    for device, flags, deterministic in (("cpu", [], False), ("cpu", ["--compile"], True), ("cuda", [], True)):
        torch.use_deterministic_algorithms(False)
        args = trainer.parser().parse_args(["--device", device, *flags])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")         # autocast for "cuda" where there is none says so
            trainer.TorchBackend(args, 0, 1, torch.device(device))
        assert torch.are_deterministic_algorithms_enabled() is deterministic, (device, flags)
    # strict: with warn_only, cuDNN's attention backward only warned, and kept adding with atomics
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"              # what the mode asks of cuBLAS


def test_causal_products_is_scaled_dot_product_attention():
    """causal_products, the attention of a CPU under bf16 autocast, against torch's causal kernel in
    float64: the same outputs and input gradients, to float64 rounding."""
    from torch_gpt.kernels import causal_products
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 4, dtype=torch.float64, generator=g).requires_grad_() for _ in range(3))
    dy = torch.randn(2, 3, 7, 4, dtype=torch.float64, generator=g)
    ours = causal_products(q, k, v)
    theirs = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    for a, b in zip((ours, *torch.autograd.grad(ours, (q, k, v), dy)),
                    (theirs, *torch.autograd.grad(theirs, (q, k, v), dy))):
        assert (a - b).abs().max() < 1e-14
    assert (causal_products(q[:, :, :1], k[:, :, :1], v[:, :, :1]) - v[:, :, :1]).abs().max() < 1e-15   # one key


def test_cpu_bf16_step_runs_on_bf16_products(monkeypatch):
    """Under CPU autocast the model's attention is causal_products and its Linears are autocast's bf16
    F.linear, never the float32 OneDNNLinear; without autocast, neither."""
    import torch_gpt.kernels as tm
    calls, onednn = [], []
    real, real_apply = tm.causal_products, tm.OneDNNLinear.apply
    monkeypatch.setattr(tm, "causal_products", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(tm.OneDNNLinear, "apply", lambda *a: onednn.append(1) or real_apply(*a))
    model = GPT(CONFIG)
    idx = torch.randint(0, CONFIG.vocab_size, (16, CONFIG.block_size))     # rows past ONEDNN_MIN_ROWS
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    loss.backward()
    assert logits.dtype == torch.bfloat16 and len(calls) == CONFIG.n_layer and not onednn
    logits, _ = model(idx, idx)
    assert logits.dtype == torch.float32 and len(calls) == CONFIG.n_layer
    assert bool(onednn) == tm.onednn_usable()                     # float32 takes oneDNN where it is usable


@pytest.mark.parametrize("flags, has", [("fpu avx512f avx512_bf16 sse", True), ("fpu amx_tile amx_bf16", True),
                                        ("fpu avx512f avx512bw", False), (None, False)])
def test_cpu_has_bf16_reads_the_flags(tmp_path, flags, has):
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert trainer.cpu_has_bf16(str(cpuinfo)) is has


def test_bf16_choice(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for has in (True, False):
        monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: has)
        assert trainer.use_bf16("auto", cpu, "float32") is has
        assert trainer.use_bf16("off", cpu, "float32") is False
        assert trainer.use_bf16("auto", cpu, "float64") is False
        assert trainer.use_bf16("auto", cuda, "float32") is True
        assert trainer.use_bf16("auto", torch.device("mps"), "float32") is False
    assert trainer.use_bf16("on", cuda, "float32") is True
    with pytest.raises(UserError, match="--bf16 on, but this CPU has neither AVX512-BF16 nor AMX"):
        trainer.use_bf16("on", cpu, "float32")
    with pytest.raises(UserError, match="--bf16 on, but --dtype float64; use --bf16 auto or off"):
        trainer.use_bf16("on", cuda, "float64")
    with pytest.raises(UserError, match="--bf16 on, but --device mps"):
        trainer.use_bf16("on", torch.device("mps"), "float32")
    monkeypatch.setattr(trainer, "cpu_has_bf16", lambda: True)
    assert trainer.use_bf16("on", cpu, "float32") is True
