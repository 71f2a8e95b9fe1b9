"""A training DataLoader that a mid-epoch checkpoint can resume inside its epoch.

Lightning saves and restores the state of a loader that has ``state_dict``
and ``load_state_dict`` (its ``_Stateful`` protocol) with the loop's own
progress, and then expects the loader to continue where it was. The
order of an epoch depends only on (seed, epoch) (``EpochSeededSampler``,
or the distributed sampler Lightning wraps around it), so continuing means
skipping the batches the interrupted run had already trained: their indices
are drawn but, with ``num_workers=0``, their frames are not read (for a
streamed pool that is most of the cost). Only batches the loop has trained
count (a callback counts them), not those the loader has produced: a
fetcher may draw ahead of training.
"""
from __future__ import annotations

import lightning as L
import torch


class ResumableLoader(torch.utils.data.DataLoader):
    """``DataLoader`` + the number of this epoch's batches already trained, as checkpoint state.

    No ``__init__`` of its own: Lightning re-creates the loader from DataLoader's arguments when it
    swaps in a distributed sampler, and the state lives in two attributes with class defaults.
    """

    _skip = 0  # batches to skip at the start of the next pass (set by a restored checkpoint)
    trained = 0  # batches of the current pass that the loop has trained (counted by CountTrainedBatches)

    def state_dict(self) -> dict:
        return {"trained": int(self.trained)}

    def load_state_dict(self, state: dict) -> None:
        self._skip = int(state.get("trained", 0))

    def __iter__(self):
        # the body runs at the pass's first batch (Lightning creates the iterator earlier and draws from it only
        # when the epoch trains), and the skip belongs to that pass alone: Lightning ends an epoch by counting
        # batches, so a pass is not always run to its end
        skip, self._skip = self._skip, 0
        self.trained = skip
        if not skip:
            yield from super().__iter__()
            return
        if self.num_workers == 0:
            batches = iter(self.batch_sampler)
            for _ in range(skip):
                next(batches, None)
            for indices in batches:
                yield self.collate_fn([self.dataset[i] for i in indices])
        else:
            for k, batch in enumerate(super().__iter__()):  # workers: skipped batches are read, then dropped
                if k >= skip:
                    yield batch


class CountTrainedBatches(L.Callback):
    """Counts trained batches on the loader Lightning iterates, and hands a restored count back to it.

    Checkpoint callbacks run after this one, so a checkpoint holds the batch just trained. The count is also
    this callback's checkpoint state: Lightning restores a loader's own state only when it sets the loader up
    after the restore, and ``estimated_stepping_batches`` (the learning-rate schedule) sets it up before.
    """

    def __init__(self):
        self._restored: int | None = None
        self._trainer = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def _loader(self) -> ResumableLoader | None:
        loader = self._trainer.train_dataloader if self._trainer is not None else None
        return loader if isinstance(loader, ResumableLoader) else None

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        if (loader := self._loader()) is not None:
            loader.trained += 1

    def state_dict(self) -> dict:
        loader = self._loader()
        return {} if loader is None else {"trained": int(loader.trained)}

    def load_state_dict(self, state: dict) -> None:
        self._restored = state.get("trained")

    def on_train_start(self, trainer, pl_module) -> None:
        loader = self._loader()
        # a checkpoint at an epoch's end holds the whole epoch: the resumed run starts the next one from its start
        if loader is not None and self._restored and self._restored < len(loader):
            loader.load_state_dict({"trained": self._restored})  # before the epoch's first batch is drawn
        self._restored = None
