"""torchvision classification models as staged students (``tv-<name>``, randomly initialised).

A small recipe per torchvision family cuts the model into named stages (the registry keeps the
supported names, so the workflow can validate them without importing torch):

    features   features.<i> children, head = pool + flatten + classifier   (MobileNet, EfficientNet)
    convnext   features.<i> children, head = pool + classifier             (ConvNeXt)
    layers     layers.<i> children, head = pool + flatten + classifier     (MNASNet)
    squeezenet features.<i> children, head = classifier + flatten
    densenet   stem, block1..block4 (dense block + transition), head
    shufflenet conv1 (+ max-pool), stage2..stage4, conv5, head = pool + fc
    resnet     stem (conv1, bn1, relu, maxpool), layer1..layer4, head = pool + fc
    regnet     stem, block1..block4, head = pool + fc
    vit        embed (patches + class token + positions), encoder_0..encoder_{L-1}, head (LN, class token, linear)

Data with other than 3 channels gets a learned 1x1 conv to 3 channels in front of the first stage
(layer names stay the same). ViTs are built for the data's image size (``tv-vit_tiny``: patch 4,
4 layers, 4 heads, width 128; ``tv-vit_b_16``/``tv-vit_b_32``: the standard models with their patch
size, which must divide the image size).

Default split: the deepest stage whose output is still at least ``image_size // 8`` pixels wide,
the resolution of the distillation ConvNet's split (4x4 at 32 px); for ViTs the last encoder layer.
ImageNet models downsample by 32, so at 28-32 px their last stages are 1x1; ConvNeXt needs at
least 32 px.
"""

from __future__ import annotations

import torch
from torch import nn

from elf_pipeline.infra.errors import InputError
from elf_pipeline.models.base import HEAD, StagedNet
from elf_pipeline.models.registry import TORCHVISION

Stages = list[tuple[str, nn.Module]]


def _pool_flatten() -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]


def _children(module: nn.Module, prefix: str) -> Stages:
    return [(f"{prefix}_{name}", child) for name, child in module.named_children()]


def _features(model: nn.Module) -> Stages:
    return _children(model.features, "features") + [(HEAD, nn.Sequential(*_pool_flatten(), model.classifier))]


def _convnext(model: nn.Module) -> Stages:
    # the classifier starts with a LayerNorm2d over (N, C, 1, 1) and flattens itself
    return _children(model.features, "features") + [(HEAD, nn.Sequential(model.avgpool, model.classifier))]


def _layers(model: nn.Module) -> Stages:
    return _children(model.layers, "layers") + [(HEAD, nn.Sequential(*_pool_flatten(), model.classifier))]


def _squeezenet(model: nn.Module) -> Stages:
    return _children(model.features, "features") + [(HEAD, nn.Sequential(model.classifier, nn.Flatten(1)))]


def _densenet(model: nn.Module) -> Stages:
    f = model.features
    return [("stem", nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)),
            ("block1", nn.Sequential(f.denseblock1, f.transition1)),
            ("block2", nn.Sequential(f.denseblock2, f.transition2)),
            ("block3", nn.Sequential(f.denseblock3, f.transition3)),
            ("block4", nn.Sequential(f.denseblock4, f.norm5)),
            (HEAD, nn.Sequential(nn.ReLU(), *_pool_flatten(), model.classifier))]


def _shufflenet(model: nn.Module) -> Stages:
    return [("conv1", nn.Sequential(model.conv1, model.maxpool)), ("stage2", model.stage2), ("stage3", model.stage3),
            ("stage4", model.stage4), ("conv5", model.conv5), (HEAD, nn.Sequential(*_pool_flatten(), model.fc))]


def _resnet(model: nn.Module) -> Stages:
    return [("stem", nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)),
            *[(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)],
            (HEAD, nn.Sequential(*_pool_flatten(), model.fc))]


def _regnet(model: nn.Module) -> Stages:
    return [("stem", model.stem), *model.trunk_output.named_children(), (HEAD, nn.Sequential(*_pool_flatten(), model.fc))]


class VitEmbed(nn.Module):
    """Patch projection, class token and position embedding of a torchvision ViT (its
    ``_process_input`` and the first lines of its encoder)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.conv_proj, self.class_token = vit.conv_proj, vit.class_token
        self.pos_embedding, self.dropout = vit.encoder.pos_embedding, vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)  # (N, patches, hidden)
        tokens = torch.cat([self.class_token.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.dropout(tokens + self.pos_embedding)


class VitHead(nn.Module):
    """Final layer norm, class token, classification head."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.ln, self.heads = vit.encoder.ln, vit.heads

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.heads(self.ln(tokens)[:, 0])


def _vit(model: nn.Module) -> Stages:
    encoders = [(f"encoder_{i}", layer) for i, layer in enumerate(model.encoder.layers)]
    return [("embed", VitEmbed(model)), *encoders, (HEAD, VitHead(model))]


RECIPES = {"features": _features, "convnext": _convnext, "layers": _layers, "squeezenet": _squeezenet,
           "densenet": _densenet, "shufflenet": _shufflenet, "resnet": _resnet, "regnet": _regnet, "vit": _vit}
VIT_PATCH = {"vit_tiny": 4, "vit_b_16": 16, "vit_b_32": 32}


def _construct(name: str, num_classes: int, image_size: int) -> nn.Module:
    import torchvision.models as tvm

    if name in VIT_PATCH:
        patch = VIT_PATCH[name]
        if image_size % patch:
            raise InputError(f"tv-{name}: image_size {image_size} is not a multiple of its patch size {patch}")
        if name == "vit_tiny":
            return tvm.VisionTransformer(image_size=image_size, patch_size=patch, num_layers=4, num_heads=4,
                                         hidden_dim=128, mlp_dim=256, num_classes=num_classes)
        return getattr(tvm, name)(weights=None, num_classes=num_classes, image_size=image_size)
    return getattr(tvm, name)(weights=None, num_classes=num_classes)


def _default_split(model: StagedNet, channels: int, image_size: int, family: str) -> str:
    if family == "vit":
        return model.layer_names[-1]
    with torch.no_grad():
        outputs = model.layers(torch.zeros(1, channels, image_size, image_size))
    target = max(1, image_size // 8)
    spatial = [name for name, value in outputs.items() if value.dim() == 4 and min(value.shape[2:]) >= target]
    return spatial[-1] if spatial else model.layer_names[0]


def torchvision_model(channels: int, num_classes: int, image_size: int, name: str, split: str | None = None) -> StagedNet:
    family = TORCHVISION[name]
    model = _construct(name, num_classes, image_size)
    for module in model.modules():  # a stage's stored output must not be changed by the next stage
        if hasattr(module, "inplace"):
            module.inplace = False
    stages = RECIPES[family](model)
    if channels != 3:
        first_name, first = stages[0]
        stages[0] = (first_name, nn.Sequential(nn.Conv2d(channels, 3, kernel_size=1), first))
    staged = StagedNet(stages, stages[-2][0])
    staged.eval()  # dry pass with one image: batch norm must use its (initial) running statistics
    try:
        with torch.no_grad():
            staged(torch.zeros(1, channels, image_size, image_size))
        default = _default_split(staged, channels, image_size, family)
    except (RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"tv-{name}: image_size {image_size} is too small for this architecture ({first_line})") from None
    staged.train()
    staged.set_split(split or default)
    return staged
