"""python -m torch_gpt.train: the real training of the kid, on a CPU, a GPU, or several through torchrun.

The loop, its files (log.jsonl, checkpoints/, kid.pt, kid.npz, loss.png), --resume and the stop rules
are numpy_gpt.machinery.loop's, shared with numpy_gpt.train; this file is the PyTorch step, the devices and DDP.
A run it starts continues with python -m numpy_gpt.train --resume, and the other way round.

    torchrun --nproc_per_node=N -m torch_gpt.train ...   data-parallel training (DDP): nccl on CUDA,
                                                         gloo on CPU; rank 0 writes all the files.
"""
import contextlib
import gc
import os
import traceback

import numpy as np
import torch
import torch.distributed as dist

from numpy_gpt.machinery.cli import run_cli, training_parser
from numpy_gpt.machinery.errors import UserError
from numpy_gpt.data import batch_rng, dropout_seed, get_batch
from numpy_gpt.machinery.loop import check_run, train
from numpy_gpt.model import dropout_masks

from .model import GPT

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def parser():
    p = training_parser("python -m torch_gpt.train", "Train the kid with PyTorch (the main job).")
    g = p.add_argument_group("torch")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="auto picks cuda, then mps, then cpu")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model; on a CPU it builds C++ kernels, so it needs a C++ compiler (CXX, "
                        "else g++), and the first step waits a minute or so for them")
    g.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bfloat16 autocast for the products (weights, AdamW and the losses stay float32): auto "
                        "turns it on for --dtype float32 on a CUDA GPU or on a CPU with bfloat16 instructions "
                        "(AVX512-BF16 or AMX); off trains in plain float32")
    g.add_argument("--cuda-graph", choices=["auto", "off"], default="auto",
                   help="auto, on one GPU in float32 (no torchrun): the step (forward, backward, clipping, AdamW) "
                        "is captured once as a CUDA graph and replayed, one launch a step instead of hundreds; "
                        "off launches each kernel from Python")
    return p


def cpu_has_bf16(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU multiplies bfloat16 natively (the avx512_bf16 or amx_bf16 flag of Linux's cpuinfo).
    Elsewhere torch emulates bfloat16, slower than float32: False off Linux, and where the file is unreadable."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(choice, device, dtype):
    """--bf16 auto, on or off -> whether the step runs under bfloat16 autocast, or a UserError."""
    able = dtype == "float32" and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16()))
    if choice == "on" and not able:
        why = (f"--dtype {dtype}" if dtype != "float32" else f"--device {device.type}" if device.type != "cpu"
               else "this CPU has neither AVX512-BF16 nor AMX, so torch would emulate bfloat16, slower than float32")
        raise UserError(f"--bf16 on, but {why}; use --bf16 auto or off")
    return able if choice == "auto" else choice == "on"


def autocast(device, bf16):
    """The step's autocast context: bfloat16 products, or none. Without autocast's cache of cast weights, which
    a CUDA graph may not keep across its capture; a step casts each weight once in any case."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)


def check_cpu_compiler():
    """--compile on a CPU: torch.compile writes C++ kernels and builds them with the compiler it finds (CXX,
    else g++). Without one it would fail at the first step, in a long traceback; this says so at the start."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        get_cpp_compiler()
    except Exception:
        raise UserError(f"--compile on a CPU needs a C++ compiler, and {os.environ.get('CXX', 'g++')} was not "
                        "found; install g++ (or set CXX to a compiler), or train without --compile") from None


def pick_device(name, local_rank):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda, but torch sees no CUDA GPU; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps, but this torch has no MPS (Apple GPU) support; use --device cpu or auto")
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def check_device(device, dtype, world):
    """What a device cannot do, as one line: MPS has no float64, and no process-group backend for torchrun."""
    if device.type == "mps" and dtype == "float64":
        raise UserError("--dtype float64 on --device mps: Apple GPUs have no float64; use --dtype float32, "
                        "or --device cpu")
    if device.type == "mps" and world > 1:
        raise UserError("torchrun with --device mps: torch has no process-group backend for Apple GPUs; run "
                        "one process, or --device cpu (gloo)")


def init_distributed(device_name, dtype="float32"):
    """-> (rank, world_size, device). Under torchrun, joins the process group (nccl on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    check_device(device, dtype, world)
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # torch.distributed.nn's functions take the default group as a default argument, bound when it is first
    # imported; DDP imports it (through torch._dynamo). Imported after init_process_group, it would hold the
    # group past destroy_process_group, and the group's gloo threads would run into interpreter shutdown.
    import torch.distributed.nn  # noqa: F401
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def barrier(device):
    """dist.barrier; nccl is told this rank's GPU, which it would otherwise have to guess."""
    if device.type == "cuda":
        dist.barrier(device_ids=[device.index])
    else:
        dist.barrier()


def leave_distributed():
    """Destroy the process group now, while Python still runs, so that gloo's threads are joined here
    rather than left running into interpreter shutdown, where a C++ thread that reaches for Python is ended
    by an unwind that aborts the process ("terminate called without an active exception", as rank 1 did
    now and then). Nothing may hold the group by then: no DDP wrapper, whose reducer holds it."""
    gc.collect()            # a wrapper kept only by a reference cycle (torch.compile makes some)
    dist.destroy_process_group()


def make_optimizer(model, args, device):
    """AdamW; weight decay only on the 2-D weights (matmuls and embeddings), as numpy_gpt.optim.decays."""
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8,
                             fused=device.type in ("cuda", "cpu"))


@torch.inference_mode()
def estimate_loss(model, batches, autocast):
    """The mean loss over the batches, as numpy_gpt takes it: in NumPy, so a float64 run keeps its precision."""
    losses = []
    for x, y in batches:
        with autocast:
            losses.append(model(x, y)[1].item())
    return float(np.mean(losses))


def wrap_model(model, compile, world, device):
    """DDP around the model, then torch.compile around that: compiling the DDP-wrapped model lets
    TorchDynamo's DDPOptimizer split the graph at DDP's gradient buckets, so their all-reduces overlap
    the backward (PyTorch's "torch.compile and DDP" notes). The other order compiles one graph whose
    gradients DDP can only reduce after it.

    Compiled in Inductor's deterministic mode: on a GPU, Inductor otherwise times several versions of a
    reduction kernel when a process first runs it and keeps the fastest, and versions that sum in other
    orders round otherwise (see also repeatable_runs)."""
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model, options={"deterministic": True}) if compile else model


def repeatable_runs(device, compile):
    """On a GPU, or under --compile: PyTorch's deterministic mode, for this process. Without it, steps do
    not repeat bit for bit: on a GPU cuDNN's attention backward adds with atomics, and so does Inductor's
    embedding backward, on a GPU or across a CPU's threads, in an order, and so with a rounding, that
    changes from run to run. Two runs of one command then part in the last bits, further with each
    step, and a resumed run is not the run that never stopped (tests/test_cuda.py). The mode picks
    kernels that add in a fixed order, at a price in speed (docs/gpu.md). An eager run on a CPU repeats already, and is left as it is."""
    if device.type != "cuda" and not compile:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")         # what the mode asks of cuBLAS
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False      # a cost the trainer has no need of


def device_dropout_masks(config, B, T, p, seed, device, dtype):
    """The 2 * n_layer dropout masks (B, T, C) drawn on the device itself, from a torch generator seeded
    by seed: 0 with probability p, else 1 / (1 - p). A GPU trains with these; drawing numpy_gpt's masks
    on one CPU core and copying them over every step would cap its throughput. They are drawn as one
    tensor, in four kernels rather than four a mask. The same seed gives the same masks on the same
    device, not numpy_gpt's."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    u = torch.rand((2 * config.n_layer, B, T, config.n_embd), generator=g, device=device)
    return list(((u >= p).to(dtype) / (1.0 - p)).unbind(0))


def micro_batches(train_ids, args, step, rank, config, device, dtype):
    """This process's --grad-accum micro-batches for one step, as (x, y, dropout masks or None).

    Rank r takes micro-batches r*K .. r*K+K-1 (numpy_gpt.data.batch_rng and dropout_seed), so W ranks
    x K micro-batches see exactly the examples and dropout masks that one process with
    --grad-accum W*K sees. The masks are numpy_gpt.model.dropout_masks, the ones numpy_gpt's trainer
    draws for the same step, on a CPU and in float64 anywhere (float64 is for checking: a float64 run on
    a GPU is numpy_gpt's run); a GPU in float32 draws its own, device_dropout_masks.
    """
    out = []
    for k in range(args.grad_accum):
        micro = rank * args.grad_accum + k
        x, y = get_batch(train_ids, args.batch_size, config.block_size, batch_rng(args.seed, step, micro))
        masks = None
        if args.dropout > 0 and device.type != "cpu" and dtype != torch.float64:
            masks = device_dropout_masks(config, *x.shape, args.dropout, dropout_seed(args.seed, step, micro),
                                         device, dtype)
        elif args.dropout > 0:
            rng = np.random.default_rng(dropout_seed(args.seed, step, micro))
            masks = [torch.from_numpy(m).to(device) for m in dropout_masks(config, *x.shape, args.dropout, rng,
                                                                           NUMPY_DTYPES[dtype])]
        out.append((torch.from_numpy(x).to(device, non_blocking=True),
                    torch.from_numpy(y).to(device, non_blocking=True), masks))
    return out


def accumulate_gradients(model, batches, autocast, world):
    """Forward and backward over the micro-batches, leaving the gradient of their mean loss in .grad.

    Under DDP the gradients are averaged across ranks during the last backward only (no_sync before):
    the result is the gradient of the mean loss over all ranks' micro-batches. -> the last loss.
    """
    for k, (x, y, masks) in enumerate(batches):
        last = k == len(batches) - 1
        with (model.no_sync() if world > 1 and not last else contextlib.nullcontext()), autocast:
            _, loss = model(x, y, masks=masks)
        (loss / len(batches)).backward()
    return loss


def optimizer_step(model, optimizer, lr, grad_clip):
    """Clip the global gradient norm, then one AdamW step at lr (a number, or the tensor a CUDA graph's
    AdamW reads it from), then clear the gradients."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class GraphedStep:
    """One training step on one GPU, captured once as a CUDA graph and then replayed.

    The kid's step is a few hundred small kernels: on a GPU, Python and PyTorch take longer to launch
    them than the GPU takes to run them (docs/gpu.md). A graph launches the whole step, forward,
    backward, clipping and AdamW, as one. What changes from step to step lives in tensors the graph
    reads: the batch and the dropout masks, copied into its input buffers before each step, and the
    learning rate, which AdamW (fused, so its step count is on the GPU too) reads from a tensor.

    The first WARMUP steps run eagerly on those buffers, on a side stream, as PyTorch's CUDA graph notes
    ask: they are the run's real steps, and they set up what a capture may not (cuBLAS's workspaces,
    AdamW's state, and under --compile the kernels, compiled for the very inputs the graph reads). The
    step after them is captured, and from then on each step is a replay of the same kernels on the same
    memory: the eager steps' arithmetic, so a resumed run, which starts eager again, is bit for bit the
    run that never stopped."""
    WARMUP = 3

    def __init__(self, model, raw, optimizer, autocast, grad_clip, device):
        self.model, self.raw, self.optimizer = model, raw, optimizer
        self.autocast, self.grad_clip = autocast, grad_clip
        self.lr = torch.zeros((), device=device)           # float32: the fused AdamW reads it so
        for group in optimizer.param_groups:
            group["lr"] = self.lr
            group["capturable"] = True      # what a capture checks for; fused AdamW's step count is on the GPU already
        self.stream = torch.cuda.Stream(device)
        self.inputs, self.graph, self.eager_steps = None, None, 0

    def step(self, batches):
        loss = accumulate_gradients(self.model, batches, self.autocast, world=1)
        optimizer_step(self.raw, self.optimizer, self.lr, self.grad_clip)
        return loss.detach()

    def __call__(self, batches, lr):
        if self.inputs is None:         # the masks as views of one tensor, as device_dropout_masks draws them
            self.inputs = [(x.clone(), y.clone(), masks and list(torch.stack(masks).unbind(0)))
                           for x, y, masks in batches]
        for (x, y, masks), (x_new, y_new, masks_new) in zip(self.inputs, batches):
            torch._foreach_copy_([x, y, *(masks or [])], [x_new, y_new, *(masks_new or [])])
        self.lr.fill_(lr)
        if self.eager_steps < self.WARMUP:
            self.eager_steps += 1
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                loss = self.step(self.inputs)
            torch.cuda.current_stream().wait_stream(self.stream)
            return loss
        if self.graph is None:
            self.graph, self.loss = capture(lambda: self.step(self.inputs))
        self.graph.replay()
        return self.loss.clone()


def capture(fn):
    """-> (graph, out): fn's kernels captured as a CUDA graph, not run, and the tensor that each replay
    writes fn's result into."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def use_cuda_graph(choice, device, dtype, world):
    """--cuda-graph auto: on one GPU (torchrun's several processes launch eagerly: DDP's all-reduces would
    need their own capture), in float32, the precision of training (float64 is for checking against
    numpy_gpt, and runs eagerly, as numpy_gpt's masks are drawn on the CPU)."""
    return choice == "auto" and device.type == "cuda" and dtype == "float32" and world == 1


class TorchBackend:
    """torch_gpt's parts of the training loop (numpy_gpt.machinery.loop says what each one is), for one process."""
    name = "torch_gpt"

    def __init__(self, args, rank, world, device):
        self.args, self.rank, self.world, self.device = args, rank, world, device
        self.master = rank == 0
        self.dtype = torch.float64 if args.dtype == "float64" else torch.float32
        self.sync_every = 1 if device.type == "cpu" else 10     # reading the loss waits for a GPU: not every step
        self.threads = torch.get_num_threads() if device.type == "cpu" else None
        self.bf16 = use_bf16(args.bf16, device, args.dtype)
        if args.compile and device.type == "cpu":
            check_cpu_compiler()
        repeatable_runs(device, args.compile)
        self.cuda_graph = use_cuda_graph(args.cuda_graph, device, args.dtype, world)
        # recorded in kid.pt: a resume in another precision, compiled where it was not, or graphed where it was not
        # (its AdamW reads the learning rate as a float32 tensor), says that it rounds otherwise than the run
        # that never stopped
        self.precision = (("bf16 autocast" if self.bf16 else args.dtype) + (" (compiled)" if args.compile else "")
                          + (" (CUDA graph)" if self.cuda_graph else ""))
        self.autocast = autocast(device, self.bf16)

    def start(self, data, state):
        args, device = self.args, self.device
        self.config, self.train_ids = data.config, data.train_ids
        self.evals = {split: [(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)) for x, y in batches]
                      for split, batches in data.evals.items()}
        self.raw = GPT(self.config, seed=args.seed, dtype=self.dtype).to(device)
        self.optimizer = make_optimizer(self.raw, args, device)
        if state:
            self.raw.load_numpy(state["params"])
            self.load_optimizer_state(state)
        self.model = wrap_model(self.raw, args.compile, self.world, device)
        self.graphed = (GraphedStep(self.model, self.raw, self.optimizer, self.autocast, args.grad_clip, device)
                        if self.cuda_graph else None)
        if self.master:
            print(f"torch_gpt: {sum(p.numel() for p in self.raw.parameters()):,} parameters, {self.config}, "
                  f"{args.dtype}{' (bf16 autocast)' if self.bf16 else ''}, device {device}"
                  f"{' (a CUDA graph a step)' if self.cuda_graph else ''}, {self.world} "
                  f"process(es) x {args.grad_accum} micro-batch(es) of {args.batch_size}: "
                  f"{args.batch_size * self.config.block_size * args.micro_batches:,} tokens per step")

    def train_step(self, step, lr):
        batches = micro_batches(self.train_ids, self.args, step, self.rank, self.config, self.device, self.dtype)
        if self.graphed:
            return self.graphed(batches, lr)
        loss = accumulate_gradients(self.model, batches, self.autocast, self.world)
        optimizer_step(self.raw, self.optimizer, lr, self.args.grad_clip)
        return loss.detach()

    def evaluate(self, split):
        self.raw.eval()
        loss = estimate_loss(self.raw, self.evals[split], self.autocast)
        self.raw.train()
        return loss

    @contextlib.contextmanager
    def sampling(self):
        kv, device = self.raw.new_kv_cache(1), self.device
        self.raw.eval()
        with torch.inference_mode():
            yield (lambda ids: self.raw.prefill(torch.tensor([ids], device=device), kv)[0].float().cpu().numpy(),
                   lambda token, pos: self.raw.decode(torch.tensor([token], device=device), pos, kv)[0]
                   .float().cpu().numpy())
        self.raw.train()

    def params(self):
        return self.raw.numpy_params()

    def optimizer_names(self):
        """The parameters' names in the optimizer's order (its state_dict numbers them so)."""
        names = {id(p): name for name, p in self.raw.named_parameters()}
        return [names[id(p)] for group in self.optimizer.param_groups for p in group["params"]]

    def optimizer_state(self):
        """AdamW's moments and step count as NumPy, the training state's form (before a first step: zeros)."""
        state = self.optimizer.state_dict()["state"]
        if not state:
            zeros = {name: np.zeros_like(p) for name, p in self.params().items()}
            return {"m": zeros, "v": zeros, "adam_step": 0}
        names = self.optimizer_names()
        return {"m": {names[i]: s["exp_avg"].detach().cpu().numpy() for i, s in state.items()},
                "v": {names[i]: s["exp_avg_sq"].detach().cpu().numpy() for i, s in state.items()},
                "adam_step": int(state[0]["step"])}

    def load_optimizer_state(self, state):
        if not state["adam_step"]:
            return                  # a fresh optimizer is the state of one that has not stepped
        full = self.optimizer.state_dict()
        full["state"] = {i: {"step": torch.tensor(float(state["adam_step"])),
                             "exp_avg": torch.from_numpy(state["m"][name]),
                             "exp_avg_sq": torch.from_numpy(state["v"][name])}
                         for i, name in enumerate(self.optimizer_names())}
        self.optimizer.load_state_dict(full)     # it casts and moves each tensor to its parameter's place

    def agree(self, flags):
        if self.world == 1:
            return flags
        t = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()


def main(argv=None):
    args = check_run(parser().parse_args(argv))
    rank, world, device = init_distributed(args.device, args.dtype)
    args.micro_batches = world * args.grad_accum        # micro-batches of --batch-size per optimizer step
    try:
        status = train(args, TorchBackend(args, rank, world, device))
        if world > 1:
            barrier(device)         # no rank leaves while rank 0 still writes the last files
        return status
    except BaseException as e:
        if world > 1:       # its frames would keep the backend's DDP wrapper alive, and the wrapper's reducer the group
            traceback.clear_frames(e.__traceback__)
        raise
    finally:
        if world > 1:
            leave_distributed()


if __name__ == "__main__":
    run_cli(main)
