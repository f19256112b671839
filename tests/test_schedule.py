"""The lr schedules: the step decay (and a decay that never fires, refused), and the official ELF
loop's (Epoch + 1 epochs, SGD recreated at the decay)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from elf_pipeline.config import ConfigError, validate_schema
from elf_pipeline.config.checks import check_config
from elf_pipeline.engine.training import TrainConfig, build_seeded, seeded_generator, train
from elf_pipeline.models import build

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


@pytest.mark.parametrize("epochs, at, expected", [(100, 0.5, 50), (3, 0.5, 2), (3, 0.67, None), (4, 0.0, None), (1, 0.5, None)])
def test_step_decay_epoch(epochs, at, expected):
    config = TrainConfig(epochs=epochs, lr_decay_at=at)
    assert config.total_epochs == epochs and config.decay_epoch == expected


@pytest.mark.parametrize("epochs, expected", [(1000, 502), (300, 152), (10, 7), (3, 3), (2, None)])
def test_official_schedule_runs_one_more_epoch_and_decays_after_half_plus_one(epochs, expected):
    # the official loop: for ep in range(Epoch + 1): train; if ep == Epoch // 2 + 1: lr *= 0.1, new SGD
    config = TrainConfig(epochs=epochs, schedule="official")
    assert config.total_epochs == epochs + 1 and config.decay_epoch == expected


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="unknown schedule 'cosine'"):
        TrainConfig(epochs=3, schedule="cosine")


def _reference_official_loop(model, images, labels, epochs, lr, generator):
    """The official structure written out: a fresh optimiser at the decay, Epoch + 1 epochs."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    for epoch in range(epochs + 1):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), 8):
            index = order[start:start + 8]
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if epoch == epochs // 2 + 1:
            lr *= 0.1
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)


def test_official_schedule_equals_recreating_the_optimiser():
    images = torch.randn(24, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(24) % 10
    factory = lambda: build("convnet-w8-d2", 1, 10, 16)  # noqa: E731
    ours, reference = build_seeded(factory, 0), build_seeded(factory, 0)
    config = TrainConfig(epochs=4, batch_size=8, dsa=None, schedule="official")
    history = train(ours, images, labels, config, seeded_generator(1))
    _reference_official_loop(reference, images, labels, 4, 0.01, seeded_generator(1))
    assert len(history) == 5
    for mine, theirs in zip(ours.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    # and without resetting the momentum the weights differ (the reset is what the option adds)
    stepped = build_seeded(factory, 0)
    train(stepped, images, labels, TrainConfig(epochs=5, batch_size=8, dsa=None, lr_decay_at=4 / 5), seeded_generator(1))
    assert not all(torch.allclose(a, b) for a, b in zip(stepped.parameters(), reference.parameters(), strict=True))


def _smoke() -> dict:
    return yaml.safe_load((REPO / "tests" / "configs" / "smoke.yaml").read_text())


@pytest.mark.parametrize("where, key", [
    (lambda c: c["teachers"]["convnet"]["train"], "teachers.convnet.train.lr_decay_at"),
    (lambda c: c["students"]["train"], "students.train.lr_decay_at"),
])
def test_a_decay_that_never_fires_is_a_config_error(where, key):
    config = _smoke()
    where(config).update(epochs=3, lr_decay_at=0.67)
    with pytest.raises(ConfigError, match=rf"config key {key}: 0.67 of 3 epochs decays the lr after the last epoch"):
        validate_schema(copy.deepcopy(config), SCHEMA)
        check_config(config)
    where(config).update(schedule="official")  # the official schedule does not read lr_decay_at
    validate_schema(copy.deepcopy(config), SCHEMA)
    check_config(config)
