"""torchvision classification models as students (``tv-<name>``): stage recipes, input-channel
adaptation, default splits, and ELF training through adapters when the split shapes differ from
the teacher's."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from elf_pipeline.artifacts.feature_file import load_features
from elf_pipeline.engine.elf import ElfLoss, Evaluation
from elf_pipeline.models import build
from elf_pipeline.models.base import HEAD
from elf_pipeline.models.registry import torchvision_names
from elf_pipeline.models.tv import _construct
from elf_pipeline.stages.students import train_students

# families with one small member each are checked at every size; the rest at 32 px
SMALL = ["tv-mobilenet_v2", "tv-shufflenet_v2_x0_5", "tv-resnet18", "tv-vit_tiny", "tv-mnasnet0_5", "tv-squeezenet1_1"]
# ImageNet models downsample by 32: ConvNeXt's last downsampling and DenseNet's last transition
# have nothing left at 28 px; the standard ViTs need the image size to be a multiple of their patch.
TOO_SMALL = {"tv-convnext_tiny": 28, "tv-densenet121": 28, "tv-vit_b_16": 28, "tv-vit_b_32": 28}


def _x(size: int, channels: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(size))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _check_staged(model, x: torch.Tensor, num_classes: int) -> None:
    with torch.no_grad():
        outputs = model.layers(x)
        logits = model(x)
        assert logits.shape == (len(x), num_classes)
        assert torch.allclose(model.rear(model.front(x)), logits, atol=1e-4)
        assert torch.equal(outputs[model.split], model.front(x))
        assert torch.allclose(model.stages[HEAD](outputs[model.layer_names[-1]]), logits, atol=1e-4)
    assert list(outputs) == model.layer_names and HEAD not in outputs


@pytest.mark.parametrize("name", torchvision_names())
def test_every_torchvision_student_at_32px_keeps_all_parameters_and_the_split_identity(name):
    torch.manual_seed(0)
    model = build(name, 3, 10, 32).eval()
    _check_staged(model, _x(32, 3), 10)
    # the recipe keeps every parameter of the torchvision model (none dropped, none added for RGB)
    assert _params(model) == _params(_construct(name[3:], 10, 32))
    split_output = model.layers(_x(32, 3, n=1))[model.split]
    if name.startswith("tv-vit"):
        assert model.split == model.layer_names[-1] and split_output.dim() == 3  # (N, tokens, hidden)
    else:  # the deepest stage still at the distillation ConvNet's split resolution (4x4 at 32 px)
        assert split_output.dim() == 4 and min(split_output.shape[2:]) >= 4
        deeper = model.layer_names[model.layer_names.index(model.split) + 1:]
        assert all(min(model.layers(_x(32, 3, n=1))[layer].shape[2:]) < 4 for layer in deeper)


@pytest.mark.parametrize("name, size", sorted(TOO_SMALL.items()))
def test_too_small_images_are_refused_by_name(name, size):
    with pytest.raises(ValueError, match=f"{name}: image_size {size} is"):
        build(name, 1, 10, size)


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("name", SMALL)
def test_grey_and_larger_images(name, size):
    torch.manual_seed(0)
    model = build(name, 1, 7, size).eval()
    _check_staged(model, _x(size, 1), 7)
    first = model.stages[model.layer_names[0]]
    assert isinstance(first[0], nn.Conv2d) and (first[0].in_channels, first[0].out_channels) == (1, 3)
    assert _params(model) == _params(_construct(name[3:], 7, size)) + 1 * 3 + 3  # the 1x1 conv to RGB


def test_split_by_name_and_unknown_split_lists_the_layers():
    model = build("tv-shufflenet_v2_x0_5", 3, 10, 32, split="stage3")
    assert model.split == "stage3" and model.layer_names == ["conv1", "stage2", "stage3", "stage4", "conv5"]
    with pytest.raises(ValueError, match="'stage9' does not exist.*conv1, stage2"):
        build("tv-shufflenet_v2_x0_5", 3, 10, 32, split="stage9")
    vit = build("tv-vit_tiny", 3, 10, 32, split="encoder_1")
    assert vit.layer_names == ["embed", "encoder_0", "encoder_1", "encoder_2", "encoder_3"] and vit.split == "encoder_1"


@pytest.mark.parametrize("arch", ["tv-mobilenet_v2", "tv-vit_tiny", "mlp", "lenet"])
@pytest.mark.parametrize("form", ["pair", "coupled"])
def test_mismatched_student_trains_an_elf_step_and_its_adapters_learn(arch, form, features_h5, synset_h5, train_split):
    """Conftest teacher: convnet-w8 at 16 px (block3 = 8x2x2); none of these students matches it."""
    teacher = load_features(features_h5, None, synset_h5, 20)
    images, labels = train_split[0][:20], train_split[1][:20]
    torch.manual_seed(0)
    student = build(arch, 1, 10, 16)
    with torch.no_grad():
        student_shape = tuple(student.front(images[:1]).shape[1:])
    assert student_shape != tuple(teacher.values.shape[1:])
    objective = ElfLoss(Evaluation(loss_mode="front_rear_task", teacher="t", adapter=form), teacher.values, student_shape)
    adapters = [objective.to_teacher, objective.from_teacher] if form == "pair" else [objective.from_teacher]
    assert objective.adapted and all(a is not None for a in adapters)
    assert (objective.to_teacher is None) == (form == "coupled")
    optimizer = torch.optim.SGD([*student.parameters(), *objective.parameters()], lr=0.01)
    before = [p.detach().clone() for p in objective.parameters()]
    for _ in range(2):  # torchvision's ViT starts with a zero head: gradients reach the rear adapter from step 2
        loss = objective(student, images, labels, torch.arange(20))
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for adapter in adapters:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    assert all(not torch.equal(b, p) for b, p in zip(before, objective.parameters(), strict=True))


def test_torchvision_student_through_train_students_reports_the_adapter(digits_h5, synset_h5, features_h5, tmp_path):
    frame = train_students(digits_h5, synset_h5, features_h5, "tv-shufflenet_v2_x0_5",
                           {"loss_mode": "front_rear_task", "teacher": "t"}, {"epochs": 1, "batch_size": 10, "dsa": False},
                           [0], tmp_path / "tv.parquet", {"evaluation": "elf"}, device="cpu")
    row = frame.iloc[0]
    assert bool(row["adapter"]) and row["student_layer"] == "stage2"  # the default split at 16 px
    assert row["teacher_feature_shape"] == "8x2x2" and row["student_feature_shape"] == "48x2x2"
    assert 0.0 <= row["test_acc"] <= 1.0


def test_adapter_bridges_vit_tokens_to_spatial_teacher_features():
    student = build("tv-vit_tiny", 3, 10, 32)
    tokens = student.front(_x(32, 3))
    assert tokens.shape == (2, 65, 128)  # class token + 8x8 patches, hidden 128
    from elf_pipeline.models.adapter import make_adapter

    adapter = make_adapter(tuple(tokens.shape[1:]), (16, 4, 4))
    target = torch.randn(2, 16, 4, 4)
    F.mse_loss(adapter(tokens), target).backward()
    assert all(p.grad is not None for p in adapter.parameters())
