import pytest
import torch
import torch.nn.functional as F
from conftest import assert_accuracy_of

from elf_pipeline.engine.augment import DSAConfig
from elf_pipeline.engine.evaluation import evaluate
from elf_pipeline.engine.training import (
    Timer,
    TrainConfig,
    TrainingDiverged,
    build_seeded,
    resolve_device,
    seeded_generator,
    task_loss,
    train,
)
from elf_pipeline.infra.errors import InputError
from elf_pipeline.models import build

ARCH = "convnet-w4-d1-nn"


def _separable(n=32, seed=0):
    """Two classes of 1x4x4 images: negative or positive constant plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = (labels.float() * 2 - 1).view(-1, 1, 1, 1) + 0.1 * torch.randn(n, 1, 4, 4, generator=gen)
    return images, labels


def _model(seed=0):
    return build_seeded(lambda: build(ARCH, 1, 2, 4), seed)


def _config(**kw):
    base = {"epochs": 3, "lr": 0.05, "batch_size": 8, "dsa": None}
    base.update(kw)
    return TrainConfig(**base)


def test_train_lowers_the_loss_on_a_separable_problem():
    images, labels = _separable()
    model = _model()
    with torch.no_grad():
        before = float(F.cross_entropy(model.eval()(images), labels))
    history = train(model, images, labels, _config(epochs=6, lr_decay_at=0.0), seeded_generator(0))
    with torch.no_grad():
        after = float(F.cross_entropy(model.eval()(images), labels))
    assert len(history) == 6
    assert history[-1] < history[0]
    assert after < 0.5 * before
    assert evaluate(model, images, labels) == 1.0


@pytest.mark.parametrize("dsa", [None, DSAConfig()])
def test_same_seed_gives_identical_weights(dsa):
    images, labels = _separable()
    runs = []
    for _ in range(2):
        model = _model(seed=3)
        history = train(model, images, labels, _config(dsa=dsa), seeded_generator(5))
        runs.append((model.state_dict(), history))
    (first, h1), (second, h2) = runs
    assert h1 == h2
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    other = _model(seed=3)
    train(other, images, labels, _config(dsa=dsa), seeded_generator(6))
    assert any(not torch.equal(first[k], other.state_dict()[k]) for k in first)


def test_build_seeded_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = _model(1), _model(1), _model(2)
    assert torch.equal(torch.random.get_rng_state(), state)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])
    assert any(not torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())


def test_nan_loss_raises_training_diverged():
    images, labels = _separable(n=8)

    def nan_loss(model, x, y, index):
        return task_loss(model, x, y, index) * float("nan")

    seen = []
    with pytest.raises(TrainingDiverged, match="epoch 1"):
        train(_model(), images, labels, _config(), seeded_generator(0), loss_fn=nan_loss,
              on_epoch=lambda e, loss: seen.append(e))
    assert seen == []


def test_huge_learning_rate_raises_training_diverged():
    images, labels = _separable(n=16)
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf|-inf) in epoch"):
        train(_model(), images, labels, _config(epochs=20, lr=1e10, lr_decay_at=0.0), seeded_generator(0))


def test_on_epoch_reports_each_epoch_and_loss_fn_receives_indices():
    images, labels = _separable(n=10)
    reported, indices = [], []

    def loss_fn(model, x, y, index):
        indices.append(index.clone())
        assert torch.equal(labels[index], y)
        return task_loss(model, x, y, index)

    history = train(_model(), images, labels, _config(epochs=2, batch_size=4), seeded_generator(0), loss_fn=loss_fn,
                    on_epoch=lambda e, loss: reported.append((e, loss)))
    assert reported == list(zip([1, 2], history, strict=True))
    # every epoch visits every sample exactly once, in batches of at most 4
    assert len(indices) == 6 and all(len(i) <= 4 for i in indices)
    for epoch in range(2):
        assert sorted(torch.cat(indices[3 * epoch: 3 * epoch + 3]).tolist()) == list(range(10))


def test_lr_decay_to_zero_freezes_weights_after_the_decay_epoch():
    images, labels = _separable(n=8)
    model = _model()
    snapshots = []

    def snap(epoch, loss):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})

    train(model, images, labels, _config(epochs=4, lr_decay_at=0.5, lr_decay=0.0), seeded_generator(0), on_epoch=snap)
    # decay happens at the start of epoch 3 (ceil(4 * 0.5) = 2 epochs at the full rate)
    assert any(not torch.equal(snapshots[0][k], snapshots[1][k]) for k in snapshots[0])
    for later in snapshots[2:]:
        for key in later:
            assert torch.equal(later[key], snapshots[1][key]), key


def test_extra_parameters_are_optimised():
    images, labels = _separable(n=8)
    scale = torch.nn.Parameter(torch.ones(()))

    def loss_fn(model, x, y, index):
        return F.cross_entropy(model(x) * scale, y)

    train(_model(), images, labels, _config(epochs=1), seeded_generator(0), loss_fn=loss_fn, extra_parameters=[scale])
    assert scale.item() != 1.0


def test_evaluate_matches_manual_count_and_restores_mode():
    images, labels = _separable(n=11, seed=4)
    labels = labels.clone()
    labels[:3] = 1 - labels[:3]  # make some of them wrong for any sensible model
    model = _model(seed=7)
    model.train()
    accuracy = evaluate(model, images, labels, batch_size=4)
    assert model.training
    model.eval()
    with torch.no_grad():
        manual = (model(images).argmax(dim=1) == labels).sum().item() / len(labels)
    assert 0.0 <= accuracy <= 1.0
    assert accuracy == pytest.approx(manual)
    assert evaluate(model, images, labels, batch_size=100) == pytest.approx(manual)
    assert not model.training


def test_evaluate_uses_running_batch_norm_statistics():
    model = build_seeded(lambda: build("convnet-w4-d1-bn", 1, 2, 4), 0)
    images, labels = _separable(n=6)
    model.eval()
    with torch.no_grad():
        manual = (model(images).argmax(1) == labels).float().mean().item()
    model.train()
    running = model.stages["block1"][1].running_mean.clone()
    assert evaluate(model, images, labels, batch_size=2) == pytest.approx(manual)
    assert torch.equal(model.stages["block1"][1].running_mean, running)


def test_train_config_round_trip():
    config = TrainConfig.from_dict({"epochs": 2, "lr": 0.1, "dsa": {"strategy": "flip"}})
    assert config.dsa == DSAConfig(strategy="flip") and config.lr == 0.1 and config.batch_size == 256
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_dict({"epochs": 1}).dsa == DSAConfig()
    assert TrainConfig.from_dict({"epochs": 1, "dsa": False}).dsa is None
    assert TrainConfig.from_dict({"epochs": 1, "dsa": False}).to_dict()["dsa"] is None
    with pytest.raises(TypeError):
        TrainConfig.from_dict({"epochs": 1, "learning_rate": 0.1})


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_seeded_generator_and_timer():
    a = torch.rand(3, generator=seeded_generator(11))
    b = torch.rand(3, generator=seeded_generator(11))
    assert torch.equal(a, b)
    import time

    with Timer() as timer:
        time.sleep(0.05)
    assert 0.05 <= timer.seconds < 5.0  # measures the block, in seconds


@pytest.mark.float_path
def test_cpu_test_pass_uses_cache_sized_chunks_with_the_same_predictions(digits_h5):
    from elf_pipeline.artifacts.data_file import load_split
    from elf_pipeline.engine.evaluation import (
        CPU_CHUNK_BYTES,
        PARALLEL_CHUNK_BYTES,
        evaluate,
        inference_chunk,
        widest_activation_bytes,
    )
    from elf_pipeline.models import build

    images, labels, info = load_split(digits_h5, "test")
    model = build("convnet", info.channels, info.num_classes, info.image_size)
    widest = widest_activation_bytes(model, images)
    assert widest == 128 * info.image_size**2 * 4  # the first conv's output, float32
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the workflow's jobs: cache-sized chunks
        assert inference_chunk(model, images, 4096) == CPU_CHUNK_BYTES // widest
        assert inference_chunk(model, images, 3) == 3
        torch.set_num_threads(2)  # several threads: chunks large enough to outlast a descheduled thread
        assert inference_chunk(model, images, 100_000) == PARALLEL_CHUNK_BYTES // widest > CPU_CHUNK_BYTES // widest
        assert inference_chunk(model, images, 256) == 256
        parallel = evaluate(model, images, labels, batch_size=4096)
    finally:
        torch.set_num_threads(threads)
    # Chunks, thread counts and memory formats take different kernels: each pass must score what the
    # float64 reference allows (a prediction may differ only where its top two logits nearly tie).
    for accuracy in (parallel, evaluate(model, images, labels, batch_size=4096)):
        assert_accuracy_of(accuracy, model, images, labels)
    channels_last = model.to(memory_format=torch.channels_last)
    assert_accuracy_of(evaluate(channels_last, images, labels, batch_size=7), model, images, labels)


def test_allocator_thresholds_are_accepted_on_glibc():
    import platform

    from elf_pipeline.infra.allocator import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator tuning applies to glibc only")
    assert keep_freed_memory() is True
