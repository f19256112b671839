"""Feature shapes of the registry's architectures by arithmetic, without torch.

The config checks compare a student's split output with its teacher's feature while the Snakefile
parses, where building models (importing torch) would make every parse slow. The rules here follow
the layer definitions of the model modules (``tests/test_models.py`` checks them against built
models for every name and several image sizes). ``tv-`` models have no rule: None.
"""

from __future__ import annotations

from elf_pipeline.models.registry import default_split, resolve

Shape = tuple[int, ...]

VGG_CHANNELS = (64, 128, 256, 256, 512, 512, 512, 512)
VGG_POOLED = (1, 2, 4, 6, 8)  # convs followed by a 2x2 max-pool
ALEXNET = ((128, True), (192, True), (256, False), (192, False), (192, True))  # (channels, pooled)
RESNET_PLANES = (64, 128, 256, 512)


def _halved(size: int) -> int:
    """A 3x3 (or 7x7) stride-2 conv with 'same' padding, or a 3x3 stride-2 max-pool with padding 1."""
    return (size - 1) // 2 + 1


def _convnet(kwargs: dict, size: int) -> dict[str, Shape]:
    width, pooled = kwargs.get("width", 128), kwargs.get("pool", "avg") != "none"
    shapes = {}
    for index in range(1, kwargs.get("depth", 3) + 1):
        size = size // 2 if pooled else size
        shapes[f"block{index}"] = (width, size, size)
    return shapes


def _resnet(kwargs: dict, size: int) -> dict[str, Shape]:
    if kwargs.get("stem", "cifar") == "imagenet":
        size = _halved(_halved(size))
    shapes = {"stem": (64, size, size)}
    for stage, planes in enumerate(RESNET_PLANES, start=1):
        for block in range(2):
            size = _halved(size) if stage > 1 and block == 0 else size
            shapes[f"layer{stage}_{block}"] = (planes, size, size)
    return shapes


def _vgg(size: int) -> dict[str, Shape]:
    shapes = {}
    for index, channels in enumerate(VGG_CHANNELS, start=1):
        size = size // 2 if index in VGG_POOLED else size
        shapes[f"conv{index}"] = (channels, size, size)
    return shapes


def _alexnet(size: int) -> dict[str, Shape]:
    shapes = {}
    for index, (channels, pooled) in enumerate(ALEXNET, start=1):
        size = size // 2 if pooled else size
        shapes[f"conv{index}"] = (channels, size, size)
    return shapes


def _lenet(channels: int, size: int) -> dict[str, Shape]:
    size = (size if channels == 1 else size - 4) // 2
    return {"conv1": (6, size, size), "conv2": (16, (size - 4) // 2, (size - 4) // 2), "fc1": (120,), "fc2": (84,)}


def layer_shapes(name: str, channels: int, image_size: int) -> dict[str, Shape] | None:
    """Output shape (without the batch dimension) of every feature stage of ``name`` on
    ``channels`` x ``image_size`` x ``image_size`` images; None where only a build can tell."""
    module, _, kwargs = resolve(name)
    if module == "convnet":
        return _convnet(kwargs, image_size)
    if module == "resnet":
        return _resnet(kwargs, image_size)
    if module == "vgg":
        return _vgg(image_size)
    if module == "alexnet":
        return _alexnet(image_size)
    if module == "lenet":
        return _lenet(channels, image_size)
    if module == "mlp":
        width = kwargs.get("width", 128)
        return {"fc1": (width,), "fc2": (width,)}
    return None


def feature_shape(name: str, channels: int, image_size: int, layer: str | None = None) -> Shape | None:
    """The shape of ``name``'s output at ``layer`` (default: its split layer); None where unknown
    (a ``tv-`` model, a layer the architecture does not have, or an image too small for it)."""
    shapes = layer_shapes(name, channels, image_size)
    layer = layer or default_split(name)
    if shapes is None or layer not in shapes:
        return None
    shape = shapes[layer]
    return shape if min(shape) >= 1 else None


def describe(shape: Shape | None) -> str:
    return "unknown" if shape is None else "x".join(map(str, shape))
