"""GPU-only checks (run on a CUDA machine: `python -m pytest tests/test_cuda.py`); without CUDA
every test here is skipped with that reason, and the CPU suite covers the same code paths eagerly."""

from __future__ import annotations

import pytest
import torch

from elf_pipeline.engine.elf import ElfLoss, Evaluation, fit_students
from elf_pipeline.engine.training import TrainConfig, build_seeded, seeded_generator
from elf_pipeline.engine.vectorized import train_vectorized
from elf_pipeline.models import build

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CLASSES, SIZE, ARCH = 4, 16, "convnet-w8"
ELF = Evaluation(loss_mode="front_rear_task", feature_loss="ce")


def _data(device):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(24, 1, SIZE, SIZE, generator=gen)
    labels = torch.arange(24) % CLASSES
    target = torch.randn(24, 16, 2, 2, generator=gen)  # 16 teacher channels vs 8: adapters train too
    return images.to(device), labels.to(device), target.to(device)


def _train(cuda_graphs: str, amp: bool = False):
    device = torch.device("cuda")
    images, labels, target = _data(device)
    models, objectives = [], []
    for seed in (0, 1, 2):
        model = build_seeded(lambda: build(ARCH, 1, CLASSES, SIZE), seed).to(device)
        with torch.no_grad():
            shape = tuple(model.eval().front(images[:1]).shape[1:])
        model.train()
        models.append(model)
        objectives.append(build_seeded(lambda shape=shape: ElfLoss(ELF, target, shape), seed + 1).to(device))
    # 3 equal batches per epoch, DSA, and a step decay half-way (the graph is captured again)
    config = TrainConfig.from_dict({"epochs": 6, "batch_size": 8, "dsa": True, "lr_decay_at": 0.5})
    run = train_vectorized(models, objectives, images, labels, config, [seeded_generator(s) for s in (0, 1, 2)],
                           amp=amp, cuda_graphs=cuda_graphs)
    state = [torch.cat([p.detach().flatten() for p in [*m.parameters(), *o.parameters()]]) for m, o in zip(models, objectives, strict=True)]
    return run, state


def test_cuda_graph_step_trains_exactly_like_the_eager_step():
    eager, eager_state = _train("false")
    graphed, graphed_state = _train("true")
    assert not eager.graphed and graphed.graphed, graphed.notes
    for a, b in zip(eager.histories, graphed.histories, strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    for a, b in zip(eager_state, graphed_state, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()


def test_cuda_graph_step_with_bfloat16_autocast_stays_close():
    eager, _ = _train("false", amp=True)
    graphed, _ = _train("true", amp=True)
    assert graphed.graphed, graphed.notes
    for a, b in zip(eager.histories, graphed.histories, strict=True):
        assert a == pytest.approx(b, rel=2e-2, abs=1e-3)


def test_students_on_the_gpu_use_the_graphed_vectorised_trainer():
    device = torch.device("cuda")
    images, labels, target = _data(device)
    config = TrainConfig.from_dict({"epochs": 4, "batch_size": 12, "dsa": True, "eval_batch_size": 16})
    fit = fit_students(ARCH, ELF, config, images, labels, images, labels, [0, 1], CLASSES, target=target)
    assert fit.trainer == "vectorized" and fit.cuda_graph, (fit.reason, fit.notes)
    assert all(0.0 <= seed.test_acc <= 1.0 and len(seed.history) == 4 for seed in fit.seeds)
