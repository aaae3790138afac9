"""Training batches on the device, from one of two paths chosen once per run.

resident: the split's tensors are moved to the training device once; each epoch's permutation is
    made on the device and a batch is one indexing op there (no per-sample Python, no host copy
    per step). The fast path, used whenever the data fits.
streamed: for data that does not fit, a torch DataLoader gathers whole batches (one index list per
    batch, no per-sample collate) in worker processes with prefetching, pins them on CUDA, and
    each batch is copied to the device without blocking.

Both paths yield (x, y) batches already on the training device, in the order of a permutation the
loop makes and keeps (so a checkpoint can resume mid-epoch); both shard that order across
processes (rank r takes rows r, r + world, ... of it, the same seeded permutation everywhere);
and both apply image augmentation batched on the device, so the loop consumes either one with the
same code.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from typing import Iterator, Optional

import torch
import torch.nn.functional as F

from damoxing.config import AugmentConfig, TrainConfig
from damoxing.core.errors import ConfigError

RESIDENT_FRACTION = 0.5  # auto: resident when the tensors take at most this share of the free memory


def shard_order(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank `rank`'s rows of a permutation: order[rank::world], padded by wrapping around so that
    every rank gets ceil(N / world) rows (equal step counts, as DistributedSampler does)."""
    if world == 1:
        return order
    n = order.numel()
    total = math.ceil(n / world) * world
    if total > n:
        order = order.repeat(math.ceil(total / n))[:total]
    return order[rank::world]


GROUP_BATCHES = 50  # length-grouped batches: each run of this many batches is sorted by text length


def length_grouped(rows: torch.Tensor, lengths: torch.Tensor, batch: int) -> torch.Tensor:
    """`rows` (a permutation) regrouped so each batch holds texts of about one length: every run of
    GROUP_BATCHES batches is sorted by length, longest first (Hugging Face's LengthGroupedSampler).
    The same rows, still in random runs; a function of `rows` alone, so a resumed epoch repeats it."""
    group = batch * GROUP_BATCHES
    parts = []
    for chunk in rows.split(group):
        keys = lengths[chunk.to(lengths.device)].to(chunk.device)
        parts.append(chunk[torch.argsort(keys, descending=True, stable=True)])
    return torch.cat(parts) if parts else rows


class ImageAugment:
    """Random crop with zero padding and random horizontal flip of a (B, C, H, W) batch, on its device.

    Randomness comes from this object's own generator (on the training device), so a checkpoint
    can save and restore it exactly.
    """

    def __init__(self, config: AugmentConfig, device: torch.device, seed: int):
        self.padding, self.flip = config.crop_padding, config.flip
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        device = x.device
        if self.padding:
            p = self.padding
            padded = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
            dy = torch.randint(0, 2 * p + 1, (batch,), device=device, generator=self.generator)
            dx = torch.randint(0, 2 * p + 1, (batch,), device=device, generator=self.generator)
            rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]  # (B, 1, H, 1)
            cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]  # (B, 1, 1, W)
            b = torch.arange(batch, device=device)[:, None, None, None]
            c = torch.arange(channels, device=device)[None, :, None, None]
            x = padded[b, c, rows, cols]  # one gather: each image's own H x W window
        if self.flip:
            flip = torch.rand(batch, device=device, generator=self.generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x


class TrainBatches(ABC):
    """An epoch of training batches on the device, for this process's shard of a permutation.

    Attributes:
        path: "resident" or "streamed".
        order_device: where the loop makes each epoch's permutation (the training device when
            resident, the CPU when streamed: the DataLoader indexes host memory).
        local_batch: rows per batch in this process, ceil(batch_size / world): the batch of
            all processes together is batch_size (up to rounding).
    """

    path = "resident"

    def __init__(self, x: torch.Tensor, y: Optional[torch.Tensor], config: TrainConfig, device: torch.device,
                 rank: int = 0, world: int = 1, channels_last: bool = False, lengths: Optional[torch.Tensor] = None):
        self.n, self.device, self.rank, self.world = x.shape[0], device, rank, world
        self.lengths = lengths  # (N,) real tokens per text: batches grouped by length (length_grouped)
        self.local_batch = math.ceil(config.batch_size / world)
        self.rows_per_rank = math.ceil(self.n / world)
        self.channels_last = channels_last
        self.augment = None
        if config.augment is not None and (config.augment.crop_padding or config.augment.flip):
            if x.dim() != 4:
                raise ConfigError(
                    f"train.augment (random crop, flip) works on images of shape (N, C, H, W); this data has rows of "
                    f"shape {tuple(x.shape[1:])}. Remove train.augment, or use an image source."
                )
            self.augment = ImageAugment(config.augment, device, seed=config.seed + 1_000_003 * (rank + 1))
        self.order_device = device

    def __len__(self) -> int:
        """Batches per epoch (the same in every process)."""
        return math.ceil(self.rows_per_rank / self.local_batch)

    def batches(self, order: torch.Tensor, start: int = 0) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """(x, y) batches on the device for this process's rows of `order`, from batch `start` on."""
        rows = shard_order(order, self.rank, self.world)
        if self.lengths is not None:
            rows = length_grouped(rows, self.lengths, self.local_batch)
        rows = rows[start * self.local_batch :]
        if self.augment is None and not self.channels_last:
            return self._gather(rows)  # nothing to add: no generator layered on top (it costs per step)
        return self._transformed(self._gather(rows))

    def _transformed(self, batches):
        for xb, yb in batches:
            if self.augment is not None:
                xb = self.augment(xb)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, yb

    @abstractmethod
    def _gather(self, rows: torch.Tensor) -> Iterator[tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """(x, y) batches on the device for these rows, `local_batch` at a time."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"augment": self.augment.generator.get_state()} if self.augment is not None else {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.augment is not None and "augment" in state:
            self.augment.generator.set_state(state["augment"])

    def close(self) -> None:
        """Release workers (streamed path)."""


class ResidentBatches(TrainBatches):
    """The split's tensors live on the training device; a batch is x[index] there."""

    path = "resident"

    def __init__(self, x, y, config, device, rank=0, world=1, channels_last=False, lengths=None):
        super().__init__(x, y, config, device, rank, world, channels_last, lengths)
        self.x = x.to(device)
        self.y = None if y is None else y.to(device)

    def _gather(self, rows):
        x, y = self.x, self.y
        for index in rows.split(self.local_batch):
            # index_select: the same rows as x[index], without advanced indexing's overhead per call
            yield x.index_select(0, index), (None if y is None else y.index_select(0, index))


class _RowBatches(torch.utils.data.Dataset):
    """dataset[index_tensor] -> a whole batch (x[index], y[index]): one gather, no per-sample collate."""

    def __init__(self, x: torch.Tensor, y: Optional[torch.Tensor]):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: torch.Tensor):
        return self.x[index], (None if self.y is None else self.y[index])


class _EpochBatchSampler(torch.utils.data.Sampler):
    """Yields this epoch's index batches; the loop sets them before each epoch (persistent workers
    keep running, the sampler is iterated in the main process)."""

    def __init__(self):
        self.index_batches: list[torch.Tensor] = []

    def __iter__(self):
        return iter(self.index_batches)

    def __len__(self) -> int:
        return len(self.index_batches)


class StreamedBatches(TrainBatches):
    """Batches gathered on the host by a DataLoader (workers, prefetch, pinned memory on CUDA), then
    copied to the device without blocking."""

    path = "streamed"

    def __init__(self, x, y, config, device, rank=0, world=1, channels_last=False, lengths=None):
        super().__init__(x, y, config, device, rank, world, channels_last, lengths)
        self.order_device = torch.device("cpu")
        self.workers = config.loader.workers if config.loader.workers is not None else min(4, os.cpu_count() or 1)
        self.sampler = _EpochBatchSampler()
        self.loader = torch.utils.data.DataLoader(
            _RowBatches(x.cpu(), None if y is None else y.cpu()),
            sampler=self.sampler,
            batch_size=None,  # the sampler yields whole index batches
            num_workers=self.workers,
            pin_memory=device.type == "cuda",
            persistent_workers=self.workers > 0,
            prefetch_factor=config.loader.prefetch_factor if self.workers > 0 else None,
        )

    def _gather(self, rows):
        self.sampler.index_batches = list(rows.split(self.local_batch))
        for xb, yb in self.loader:
            yield xb.to(self.device, non_blocking=True), (None if yb is None else yb.to(self.device, non_blocking=True))

    def close(self) -> None:
        self.loader = None  # drops the persistent workers' iterator, which shuts them down


def available_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are): free memory of a CUDA device, else the host's available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device}"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "of available RAM"
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "of free RAM"


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether tensors of `nbytes` take at most RESIDENT_FRACTION of the device's free memory."""
    return nbytes <= RESIDENT_FRACTION * available_memory(device)[0]


def choose_path(config: TrainConfig, nbytes: int, device: torch.device) -> tuple[str, str]:
    """("resident" | "streamed", why): train.data_on_device, or on auto the size vs free memory."""
    if config.data_on_device is True:
        return "resident", "train.data_on_device: true"
    if config.data_on_device is False:
        return "streamed", "train.data_on_device: false"
    free, what = available_memory(device)
    fits = nbytes <= RESIDENT_FRACTION * free
    return ("resident" if fits else "streamed"), (
        f"auto: {_size(nbytes)} of tensors {'fit in' if fits else 'exceed'} {RESIDENT_FRACTION:.0%} of the {_size(free)} {what}"
    )


def make_batches(x: torch.Tensor, y: Optional[torch.Tensor], path: str, config: TrainConfig, device: torch.device,
                 rank: int = 0, world: int = 1, channels_last: bool = False, lengths: Optional[torch.Tensor] = None) -> TrainBatches:
    cls = ResidentBatches if path == "resident" else StreamedBatches
    return cls(x, y, config, device, rank, world, channels_last, lengths)


def _size(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1024 or unit == "GB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    return f"{nbytes:.1f} TB"  # pragma: no cover
