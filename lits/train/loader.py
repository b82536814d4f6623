"""The training loader: lesion-oversampled draws (resumable mid-epoch) -> batches of ROI crops read by worker
processes."""

from __future__ import annotations

import signal

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

from lits.core.config import TrainConfig
from lits.core.errors import LitsError
from lits.data.sampling import LesionSampler, SliceIndex, TrainSlices


class PositionedSampler(Sampler):
    """The LesionSampler, started `skip` draws into the epoch (resume mid-epoch), optionally recording its draws.

    The draws are a pure function of (seed, epoch, rank, world_size) and each crop is seeded by its draw id, so
    skipping the draws already consumed resumes the epoch exactly, without reading their crops.
    """

    def __init__(self, sampler: LesionSampler):
        self.sampler = sampler
        self.skip, self.record, self.drawn = 0, False, []

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip, self.drawn = skip, []

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)

    def __iter__(self):
        for i, item in enumerate(self.sampler):
            if i < self.skip:
                continue
            if self.record:
                self.drawn.append(item)
            yield item


def _quiet_worker(_worker_id: int) -> None:
    """Loader workers ignore SIGINT/SIGTERM: the main process handles them (finishes the step, saves) and then
    shuts the workers down itself; a worker dying first would abort the loop instead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def close_loader(loader: DataLoader) -> None:
    """Stop the loader's persistent workers now, as its iterator's finaliser would. They ignore SIGTERM (above), so
    after an exception, whose traceback keeps the loader alive until interpreter exit, multiprocessing's exit
    handler would SIGTERM them and then wait for them forever. torch has no public way to do this."""
    iterator = loader._iterator  # noqa: SLF001  (DataLoader keeps its persistent workers' iterator here)
    if iterator is not None:
        iterator._shutdown_workers()  # noqa: SLF001
        loader._iterator = None  # noqa: SLF001


def build_loader(cfg: TrainConfig, index: SliceIndex, weights, rank: int, world_size: int, device: torch.device):
    """(loader, positioned sampler, the loader's seed generator, steps per epoch) for this rank.

    Each request to a worker is a whole batch of draws (TrainSlices reads a batch's crops in one go, bit-identical to
    reading them one by one), so workers spend their time reading, not on per-sample Python and collation."""
    data = cfg.data
    sampling = data.sampling
    sampler = PositionedSampler(LesionSampler(weights, sampling.samples_per_epoch, cfg.seed, rank, world_size))
    generator = torch.Generator()  # the loader's worker seeds come from here, not from the global torch RNG
    workers = data.num_workers
    loader = DataLoader(
        TrainSlices(index, data.crop_size, sampling, seed=cfg.seed, context_slices=data.context_slices),
        batch_size=None,  # the sampler below hands out batches of draws; the dataset returns them stacked
        sampler=BatchSampler(sampler, cfg.trainer.batch_size, drop_last=True),
        num_workers=workers,
        pin_memory=device.type == "cuda" if data.pin_memory is None else data.pin_memory,
        prefetch_factor=data.prefetch_factor if workers > 0 else None,
        persistent_workers=workers > 0 and data.persistent_workers,
        worker_init_fn=_quiet_worker if workers > 0 else None,
        generator=generator,
    )
    steps = len(sampler.sampler) // cfg.trainer.batch_size
    if steps == 0:
        raise LitsError(
            f"data.sampling.samples_per_epoch={sampling.samples_per_epoch} gives {len(sampler.sampler)} samples per "
            f"process ({world_size} process(es)), fewer than trainer.batch_size={cfg.trainer.batch_size}; raise it"
        )
    return loader, sampler, generator, steps
