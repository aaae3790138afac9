"""Resumable checkpoints: one safetensors file (tensors + a JSON header), written atomically.

While a run trains, its checkpoint lives in the run's hidden partial folder,
`<runs>/.<name>.partial/checkpoints/checkpoint.safetensors` (`damoxing train --resume <runs>/<name>`
continues from it); when the run completes the checkpoint is dropped, the run folder keeps only
the final artefacts. The file holds

    model/<name>              the model's full weights
    best/<name>               the best epoch's weights so far (when restore_best)
    optimizer/<param>/<key>   optimizer state tensors (momentum buffers, Adam moments and step)
    rng/<generator>/<rank>    generator states as uint8: torch's CPU and CUDA generators and the
                              augmentation generator of every process, the shuffling generator
    data/order                the current epoch's permutation (a checkpoint taken mid-epoch)
    loop/window               losses of the current log interval not yet read
    loop/epoch_sums           the current epoch's loss sums so far

and, in the safetensors metadata under "damoxing", JSON: the resolved config, the data fingerprint,
the number of processes, the optimizer's param groups and non-tensor state, the training loop's
state under "loop" (training/state.py's LoopState, versioned: epoch, batch within the epoch, step,
history, early-stopping, plateau and loss-window state), and a SHA-256 of every tensor's bytes (a
damaged file is refused, not half-loaded). The model, optimizer and generator parts are captured
here (`capture_state`, `restore_state`), the loop's part by LoopState itself. A new checkpoint is
written to a temporary file, fsynced and renamed over the previous one, so a crash at any moment
leaves the last complete checkpoint in place. No pickle anywhere: safetensors and JSON only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from damoxing.core.errors import RunFolderError

FORMAT = 1
FILE_NAME = "checkpoint.safetensors"
META_KEY = "damoxing"


class CheckpointError(RunFolderError):
    """A checkpoint that cannot be used: damaged, from another config or data, or another setup."""


@dataclass
class Checkpoint:
    """What one checkpoint file holds: tensors by name and the JSON state."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Optional[Path] = None

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under `prefix/`, with the prefix removed."""
        start = prefix + "/"
        return {k[len(start):]: v for k, v in self.tensors.items() if k.startswith(start)}


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of every tensor, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write atomically: temp file, fsync, rename over `path`, fsync the folder."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Own copies: safetensors refuses tensors that share memory (tied weights), and a view of a
    # larger buffer would save the whole buffer.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {**meta, "format": FORMAT, "sha256": tensors_digest(tensors)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # some systems cannot open a folder; the rename is still atomic
        return path
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_checkpoint(path: Path) -> Checkpoint:
    """Load and verify a checkpoint; a damaged or foreign file raises CheckpointError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"There is no checkpoint at '{path}'. Checkpoints are written only when train.checkpoint_every is set.")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(META_KEY)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise CheckpointError(
            f"The checkpoint '{path}' is damaged and cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__}). "
            "It cannot be resumed; start the run again without --resume."
        ) from None
    if header is None:
        raise CheckpointError(f"'{path}' is a safetensors file but not a damoxing checkpoint (no '{META_KEY}' header).")
    try:
        meta = json.loads(header)
    except json.JSONDecodeError:
        raise CheckpointError(f"The checkpoint '{path}' is damaged: its JSON header does not parse. Start the run again without --resume.") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"The checkpoint '{path}' has format {meta.get('format')!r}; this damoxing reads format {FORMAT}.")
    if tensors_digest(tensors) != meta.get("sha256"):
        raise CheckpointError(
            f"The checkpoint '{path}' is damaged: its tensors do not match the checksum written with them. "
            "It cannot be resumed; start the run again without --resume."
        )
    return Checkpoint(tensors, meta, path)


def check_identity(checkpoint: Checkpoint, config: dict[str, Any], fingerprint: str, world: int) -> None:
    """Refuse to resume with a different config, different data or another number of processes."""
    saved = checkpoint.meta.get("config", {})
    if saved != config:
        diffs = _differences(saved, config)
        shown = "; ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, a, b in diffs[:5])
        raise CheckpointError(
            f"The checkpoint '{checkpoint.path}' was written by a run with a different config ({shown}"
            f"{'; ...' if len(diffs) > 5 else ''}). Resume with the run's own config (`damoxing train --resume RUN` "
            "without a config file or --set), or start a new run."
        )
    if checkpoint.meta.get("data_fingerprint") != fingerprint:
        raise CheckpointError(
            f"The data changed since the checkpoint '{checkpoint.path}' was written (its fingerprint differs), so the "
            "run cannot continue where it stopped. Restore the original data, or start a new run."
        )
    if checkpoint.meta.get("world", 1) != world:
        saved_world = checkpoint.meta.get("world", 1)
        raise CheckpointError(
            f"The checkpoint '{checkpoint.path}' was written by {saved_world} process(es), and this run has {world}. "
            f"Resume with --nproc {saved_world} so every process gets back its own data shard and random state."
        )


def _differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out.extend(_differences(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]


# ---------------------------------------------------------------------------------------------
# Optimizer state <-> flat tensors + JSON


def optimizer_to_flat(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict keyed by parameter name (torch.distributed.checkpoint's form) ->
    (tensors under optimizer/<param>/<key>, JSON with param groups and non-tensor values)."""
    tensors, scalars = {}, {}
    for param, values in state.get("state", {}).items():  # empty on ranks > 0 for a sharded model
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{param}/{key}"] = value
            else:
                scalars.setdefault(param, {})[key] = value
    return tensors, {"param_groups": state.get("param_groups", []), "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], saved: dict[str, Any], current_groups: list[dict]) -> dict[str, Any]:
    """The inverse of optimizer_to_flat. Tuples (e.g. Adam's betas) come back from JSON as lists;
    they are turned back into tuples where the live optimizer has tuples."""
    state: dict[str, dict[str, Any]] = {}
    for name, value in tensors.items():
        param, key = name.rsplit("/", 1)
        state.setdefault(param, {})[key] = value
    for param, values in saved["scalars"].items():
        state.setdefault(param, {}).update(values)
    groups = []
    for group, live in zip(saved["param_groups"], current_groups):
        groups.append({k: (tuple(v) if isinstance(live.get(k), tuple) and isinstance(v, list) else v) for k, v in group.items()})
    return {"state": state, "param_groups": groups}


@dataclass
class Checkpointer:
    """Where and how often the loop writes checkpoints, and the checkpoint to resume from.

    Attributes:
        path: the checkpoint file.
        every: (N, "epochs" | "steps"), or None for no periodic checkpoints.
        identity: what must match on resume: {"config": resolved config dict, "data_fingerprint": str}.
        resume: the checkpoint to continue from, already verified against `identity`.
        write: whether this process writes (rank 0 only).
    """

    path: Path
    every: Optional[tuple[int, str]]
    identity: dict[str, Any] = field(default_factory=dict)
    resume: Optional[Checkpoint] = None
    write: bool = True

    def due_after_step(self, step: int) -> bool:
        return self.every is not None and self.every[1] == "steps" and step % self.every[0] == 0

    def due_after_epoch(self, epoch: int) -> bool:
        return self.every is not None and self.every[1] == "epochs" and epoch % self.every[0] == 0

    def save(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if self.write:
            write_checkpoint(self.path, tensors, {**self.identity, **meta})


# ---------------------------------------------------------------------------------------------
# A training session's live objects <-> a checkpoint (the loop's own state: training/state.py)


@dataclass
class Session:
    """The live objects whose state a checkpoint holds besides the loop's own (LoopState).

    Attributes:
        module: what is trained: the model, DDP around it, or its sharded copy (FSDP).
        optimizers: by name; one, or several over disjoint parameters (a model that owns its update).
        generator: the shuffling generator (the same in every process).
        batches: the training batches (their augmentation generator).
        device: the training device.
        ctx: this process's place among the processes.
    """

    module: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    generator: torch.Generator
    batches: Any
    device: torch.device
    ctx: Any


def capture_state(session: Session) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The model's weights, the optimizers' state and every random generator: (tensors, JSON).
    Collective with several processes (every process must call it; RNG states are gathered to all)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    from damoxing.training import distributed as dist

    sharded = dist.is_sharded(session.module)
    # Keys are parameter names (no DDP "module." prefix); a sharded model is gathered whole.
    model_state, optim_state = get_state_dict(session.module, list(session.optimizers.values()),
                                              options=StateDictOptions(full_state_dict=sharded, cpu_offload=sharded))
    tensors = {f"model/{k}": v for k, v in model_state.items()}
    optim_tensors, optim_json = optimizer_to_flat(optim_state)
    tensors.update(optim_tensors)
    generators = {"torch_cpu": torch.get_rng_state(), **session.batches.state_dict()}
    if session.device.type == "cuda":
        generators["cuda"] = torch.cuda.get_rng_state(session.device)
    for name, state in sorted(generators.items()):
        for rank, part in enumerate(dist.gather_bytes(state, session.device)):
            tensors[f"rng/{name}/{rank}"] = part
    tensors["rng/shuffle"] = session.generator.get_state()  # the same in every process
    return tensors, {"world": session.ctx.world, "optimizer": optim_json}


def restore_state(checkpoint: Checkpoint, session: Session) -> None:
    """Load a checkpoint's weights, optimizer state and generators into the live session."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    from damoxing.training import distributed as dist

    optimizers = list(session.optimizers.values())
    sharded = dist.is_sharded(session.module)
    groups = [group for optimizer in optimizers for group in optimizer.param_groups]
    optim_state = optimizer_from_flat(checkpoint.group("optimizer"), checkpoint.meta["optimizer"], groups)
    try:
        set_state_dict(session.module, optimizers, model_state_dict=checkpoint.group("model"), optim_state_dict=optim_state,
                       options=StateDictOptions(full_state_dict=sharded))
    except (RuntimeError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"The checkpoint '{checkpoint.path}' does not fit this model and optimizer ({str(e).strip().splitlines()[0]}). "
            "Resume with the run's own config, or start a new run."
        ) from None
    tensors, rank, device = checkpoint.tensors, session.ctx.rank, session.device
    torch.set_rng_state(tensors[f"rng/torch_cpu/{rank}"])
    if device.type == "cuda" and f"rng/cuda/{rank}" in tensors:
        torch.cuda.set_rng_state(tensors[f"rng/cuda/{rank}"], device)
    if f"rng/augment/{rank}" in tensors:
        session.batches.load_state_dict({"augment": tensors[f"rng/augment/{rank}"]})
    session.generator.set_state(tensors["rng/shuffle"])
