"""An endless, reproducible stream of training batches built from a uint8 NHWC array.

Data order is a function of (seed, epoch) and flips of (seed, step), so the stream's whole state is
two integers: resume restores them and the next batch is bitwise the one an uninterrupted run sees.
With several processes (rank r of `world_size`), each takes rows [r*b, (r+1)*b) of the global batch of
`world_size * b` images, flips included: together they draw exactly what one process with the global
batch draws, and every image is seen once per epoch across the processes. The position is global too,
so a resume may change the number of processes.
Decoding happened once (see data/cache.py); here a batch is an index, a uint8 gather, a float
conversion to [-1, 1] and optional flips, done in torch on the training device.
"""

from __future__ import annotations

import numpy as np
import torch

from ganforge.errors import UserError

_MIX = 1_000_003  # keeps (seed, counter) pairs apart when they seed a generator


def seeded_generator(seed: int, counter: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((seed * _MIX + counter) % (2**63 - 1))
    return g


class BatchStream:
    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        batch_size: int,
        seed: int,
        device: torch.device,
        hflip: bool = False,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        n = len(images)
        if n < batch_size * world_size:
            raise UserError(
                f"the dataset has {n} images, fewer than one batch (train.batch_size={batch_size * world_size}"
                + (f", {batch_size} on each of {world_size} processes" if world_size > 1 else "")
                + "); lower train.batch_size or add images"
            )
        # small enough datasets live in RAM as one tensor; huge ones stay memory-mapped
        self.images: torch.Tensor | np.ndarray = (
            torch.from_numpy(np.array(images, copy=True)) if images.nbytes < (4 << 30) else images
        )
        if labels is None:
            self.labels = None
        else:  # class indices stay int64, multi-hot attribute rows stay float
            lab = np.asarray(labels)
            self.labels = torch.as_tensor(lab, dtype=torch.float32 if lab.dtype.kind == "f" else torch.long)
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.hflip, self.channels_last = hflip, channels_last
        self.rank, self.world_size = rank, world_size
        self.n = n
        self.epoch, self.pos = 0, 0
        self._perm: torch.Tensor | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None:
            self._perm = torch.randperm(self.n, generator=seeded_generator(self.seed, self.epoch))
        return self._perm

    def next(self, step: int, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's part of the batch for `step`: (float NCHW in [-1, 1] on device, labels or None).
        `batch_size` (per process) overrides the stream's for this batch (progressive growing changes it)."""
        bs = self.batch_size if batch_size is None else batch_size
        if bs > self.n // self.world_size:
            raise UserError(f"batch size {bs * self.world_size} is larger than the dataset ({self.n} images); lower it")
        global_bs = bs * self.world_size
        if self.pos + global_bs > self.n:  # drop the ragged tail, like drop_last=True
            self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
        start = self.pos + self.rank * bs
        idx = self._permutation()[start : start + bs]
        self.pos += global_bs
        if isinstance(self.images, torch.Tensor):
            batch = self.images[idx]
        else:
            batch = torch.from_numpy(np.asarray(self.images[np.sort(idx.numpy())]))
            idx = idx[torch.argsort(idx)]
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        if self.hflip:
            # drawn for the global batch, so that process r flips what one process would flip in its rows
            coins = torch.rand(global_bs, generator=seeded_generator(self.seed + 1, step))
            flip = coins[self.rank * bs : (self.rank + 1) * bs] < 0.5
            x = torch.where(flip.to(self.device)[:, None, None, None], x.flip(3), x)
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)
        y = None if self.labels is None else self.labels[idx].to(self.device)
        return x, y

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos, self._perm = int(state["epoch"]), int(state["pos"]), None
