"""The GPU paths of torch_gpt, checked where a CPU can check them: GELU off the CPU, dropout masks drawn on
the device, nccl's barrier, DDP inside torch.compile, MPS's limits, and a step under bf16 autocast."""
import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import torch_gpt.train as trainer
from numpy_gpt.config import GPTConfig, UserError
from torch_gpt.model import GPT, gelu

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def test_gelu_is_the_builtin_off_the_cpu():
    """A custom autograd Function is opaque to autocast: on a GPU under bf16 TanhGELU would compute in
    bfloat16, where the fused built-in computes in float32. The meta device stands in for a GPU."""
    on_cpu = gelu(torch.randn(4, requires_grad=True))
    off_cpu = gelu(torch.empty(4, device="meta", requires_grad=True))
    assert type(on_cpu.grad_fn).__name__ == "TanhGELUBackward"
    assert "Gelu" in type(off_cpu.grad_fn).__name__, type(off_cpu.grad_fn).__name__


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


def test_micro_batches_draw_masks_on_the_device_off_the_cpu(monkeypatch):
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
    is within bfloat16's rounding of float32's, and every parameter gets a finite gradient."""
    torch.manual_seed(0)
    model = GPT(CONFIG)
    idx = torch.randint(0, CONFIG.vocab_size, (4, CONFIG.block_size))
    _, loss32 = model(idx, idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss16 = model(idx, idx)
    loss16.backward()
    assert abs(loss16.item() - loss32.item()) < 2e-2 * loss32.item()    # bf16 keeps 8 bits: ~0.4% a rounding
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
