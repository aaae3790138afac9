"""Several processes on torch.distributed: launch through torchrun, wrap the model, reduce measurements.

`damoxing train CFG --nproc N` runs torchrun's launcher (torch.distributed.run) in its own process,
which starts N workers on this machine, each running `python -m damoxing train CFG ...`; for
several machines run torchrun yourself on each:

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m damoxing train CFG.yaml

Every process loads the same data and builds the same model (same seed); the loop wraps it in
DistributedDataParallel (a replica per process, gradients all-reduced) or, for large models,
FSDP's fully_shard (parameters, gradients and optimizer state sharded). Only rank 0 prints,
checkpoints and writes the run folder. With one process nothing here does anything.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from dataclasses import dataclass

import torch
from torch import nn

from damoxing.core.errors import ConfigError
from damoxing.models.protocols import ShardsInUnits


@dataclass(frozen=True)
class DistributedContext:
    """This process's place among `world` processes (world 1: no torch.distributed at all)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def current() -> DistributedContext:
    """The context of the process group this process joined, or a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistributedContext()


def launched_rank() -> int:
    """This process's rank as torchrun announced it (RANK), known before the process group is
    joined; 0 without torchrun."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def init_distributed(device_name: str) -> DistributedContext:
    """Join the process group torchrun prepared (WORLD_SIZE > 1 in the environment): NCCL for CUDA,
    gloo on CPU. Without torchrun, a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device_name == "auto" or device_name.startswith("cuda"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank)


def process_device(device: torch.device, ctx: DistributedContext) -> torch.device:
    """Each process of a CUDA run takes the GPU of its local rank."""
    if ctx.active and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def shutdown() -> None:
    """Leave the process group together: the other ranks wait here until rank 0 has written the run.

    Without the barrier a worker that finished training tore its group down while rank 0 was still
    evaluating; now and then (seen once in ~20 CPU runs) that worker aborted at exit ("terminate
    called without an active exception"), and torchrun then stopped rank 0 before it printed.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(argv: list[str], nproc: int) -> int:
    """Run `damoxing ARGV` in `nproc` worker processes on this machine through torchrun's launcher
    (torch.distributed.run, standalone rendezvous); returns the exit code of the first that failed, or 0.

    The launcher runs in this process so that a worker's error is reported once, as its own
    message (rank 0 prints it), instead of under torchrun's ChildFailedError traceback."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # CPU threads shared fairly between the workers (torchrun would otherwise set 1 and say so).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "damoxing", *argv]))
    except ChildFailedError as error:
        _, failure = error.get_first_failure()
        return failure.exitcode if failure.exitcode and failure.exitcode > 0 else 1
    return 0


def choose_strategy(setting: str, n_params: int, min_params: int) -> str:
    """train.distributed: ddp | fsdp, or auto: fsdp for models of at least `min_params` parameters."""
    if setting != "auto":
        return setting
    return "fsdp" if n_params >= min_params else "ddp"


def wrap_model(model: nn.Module, strategy: str, device: torch.device, ctx: DistributedContext) -> nn.Module:
    """The module the loop trains: `model` itself (one process), DDP around it, or a fully sharded
    copy (FSDP; `model` stays whole and receives the trained weights at the end)."""
    if not ctx.active:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    sharded = copy.deepcopy(model)
    mesh = init_device_mesh(device.type, (ctx.world,))
    # Shard block by block (the elements of every ModuleList, e.g. transformer layers; a model may
    # name its own units: ShardsInUnits), so only one block's full parameters exist at a time.
    # The root takes the rest: parameters used outside their module's forward (tied embeddings)
    # must stay there.
    units = sharded.fsdp_units() if isinstance(sharded, ShardsInUnits) else [
        block for module in sharded.modules() if isinstance(module, nn.ModuleList) for block in module]
    for unit in units:
        fully_shard(unit, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    return sharded


def is_sharded(module: nn.Module) -> bool:
    # Without FSDP imported nothing can be sharded; importing it here would cost a training run ~0.5 s.
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(module, fsdp.FSDPModule)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (a sharded module is returned as is)."""
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights as plain tensors (copies). Collective for a sharded module: every
    process must call it; under FSDP every process receives the full weights."""
    if is_sharded(module):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
        return {k: v.detach().clone() for k, v in state.items()}
    return {k: v.detach().clone() for k, v in unwrap(module).state_dict().items()}


_NOTHING = contextlib.nullcontext()


def no_sync(module: nn.Module, sync: bool):
    """DDP's no_sync during gradient accumulation (gradients are all-reduced once per step)."""
    if not sync and isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return module.no_sync()
    return _NOTHING


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (nothing with one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank `src`'s values everywhere, in place (nothing with one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.broadcast(tensor, src=src)
    return tensor


def gather_bytes(data: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every process's uint8 tensor of the same length (e.g. RNG states), in rank order, on the CPU."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [data]
    local = data.to(device)  # NCCL moves only device tensors
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return [p.cpu() for p in parts]


def require_supported(strategy: str, l1: float, l2: float) -> None:
    """Refuse combinations that cannot run sharded."""
    if strategy == "fsdp" and (l1 or l2):
        raise ConfigError("train.l1 / train.l2 penalties are not supported with FSDP (the weights are sharded); "
                          "use train.optimizer.weight_decay, or train.distributed: ddp.")
