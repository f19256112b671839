"""The trainer's contract (``engine.training.run_epochs``), shown with a step strategy that trains
nothing: the schedule decays the strategy's optimiser at the decay epoch, an epoch's loss is the
image-weighted mean of its batches per seed, losses are read every ``sync_epochs`` epochs, and a
NaN stops training naming its epoch and seed. The two real strategies (``SeedLoop``,
``vectorized.VectorizedSeeds``) are tested against each other and bit for bit on resume in
tests/test_training.py, tests/test_vectorized.py and tests/test_resume.py."""

from __future__ import annotations

import math

import pytest
import torch

from elf_pipeline.engine.training import TrainConfig, run_epochs
from elf_pipeline.infra.errors import TrainingDiverged


class Scripted:
    """Two seeds; batches of 4 and 2 images; step ``k`` (1-based) returns losses ``[k, 2k]``, or NaN
    for seed 1 from step ``nan_from`` on. Records the lr each epoch starts with."""

    seeds, names_seeds, device = 2, True, torch.device("cpu")

    def __init__(self, sync_epochs: int, nan_from: int | None = None):
        self.sync_epochs, self.nan_from = sync_epochs, nan_from
        self.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        self.lrs: list[float] = []
        self.steps = self.lr_changes = 0

    def batches(self):
        self.lrs.append(self.optimizer.param_groups[0]["lr"])
        for size in (4, 2):
            yield torch.zeros(size), torch.zeros(2, size, dtype=torch.long), None

    def step(self, x, y, index):
        self.steps += 1
        second = math.nan if self.nan_from is not None and self.steps >= self.nan_from else 2.0 * self.steps
        return torch.tensor([float(self.steps), second])

    def lr_changed(self):
        self.lr_changes += 1


CONFIG = TrainConfig(epochs=4, lr=1.0, lr_decay_at=0.5, lr_decay=0.1, dsa=None)


def expected(epoch: int) -> float:
    """Seed 0's loss of (0-based) ``epoch``: steps 2e+1 (4 images) and 2e+2 (2 images)."""
    return (4 * (2 * epoch + 1) + 2 * (2 * epoch + 2)) / 6


def test_the_trainer_owns_schedule_weighting_and_reads():
    strategy, seen = Scripted(sync_epochs=3), []
    histories = run_epochs(strategy, CONFIG, "scripted", on_epoch=lambda epoch, loss: seen.append((epoch, loss)))
    assert histories[0] == [expected(e) for e in range(4)]
    assert histories[1] == [2 * expected(e) for e in range(4)]
    assert strategy.lrs == pytest.approx([1.0, 1.0, 0.1, 0.1]) and strategy.lr_changes == 1  # decayed once, at epoch 3
    assert seen == [(e + 1, expected(e)) for e in range(4)]  # every epoch reported, in order, across reads


@pytest.mark.parametrize("sync_epochs", [1, 3])
def test_a_nan_stops_training_naming_its_epoch_and_seed(sync_epochs):
    strategy = Scripted(sync_epochs=sync_epochs, nan_from=5)  # step 5 is the first of epoch 3
    with pytest.raises(TrainingDiverged, match=r"loss became nan in epoch 3 of scripted \(seed index 1, lr 1.0\)"):
        run_epochs(strategy, CONFIG, "scripted")
    assert strategy.steps == 6  # stopped at the first read after the NaN: epoch 3 completes, epoch 4 never starts
