"""Architecture names -> constructors.

Importing this module does not import torch (the workflow validates names while parsing the
Snakefile); the model modules are imported when a model is built.

ConvNet names compose: ``convnet`` plus any of ``-w<width>``, ``-d<depth>``, a norm
(``-in`` instance, ``-bn``, ``-ln``, ``-gn``, ``-nn`` none), an activation (``-relu``, ``-sigmoid``,
``-leakyrelu``) and a pooling (``-avgpool``, ``-maxpool``, ``-nopool``); e.g. ``convnet-w512``,
``convnet-d4-bn``.

``tv-<name>`` builds a torchvision classification model (random weights) cut into stages by a
per-family recipe (``models/tv.py``); the supported names are listed in ``TORCHVISION``. Their
layer names depend on the build, so ``layer_names`` returns None for them.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from elf_pipeline.infra.errors import InputError, UnknownArchitecture

# name -> (module, factory, keyword arguments)
FIXED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "resnet18": ("resnet", "resnet18", {"norm": "instance"}),
    "resnet18-bn": ("resnet", "resnet18", {"norm": "batch"}),
    "resnet18-imagenet": ("resnet", "resnet18", {"norm": "instance", "stem": "imagenet"}),
    "resnet18-bn-imagenet": ("resnet", "resnet18", {"norm": "batch", "stem": "imagenet"}),
    # The official Tiny ImageNet (64 px) students: ImageNet stem split after stage 3 (256x4x4) ...
    "resnet18-imagenet-l4": ("resnet", "resnet18", {"norm": "instance", "stem": "imagenet", "official_split": "layer3_1"}),
    "resnet18-bn-imagenet-l4": ("resnet", "resnet18", {"norm": "batch", "stem": "imagenet", "official_split": "layer3_1"}),
    # ... and VGG11 with the MLP classifier split after its 6th conv and that conv's pool (512x4x4)
    "vgg11-imagenet-l6": ("vgg", "vgg11", {"norm": "instance", "head": "mlp", "official_split": "conv6"}),
    "vgg11-bn-imagenet-l6": ("vgg", "vgg11", {"norm": "batch", "head": "mlp", "official_split": "conv6"}),
    "vgg11": ("vgg", "vgg11", {"norm": "instance"}),
    "vgg11-bn": ("vgg", "vgg11", {"norm": "batch"}),
    "alexnet": ("alexnet", "alexnet", {"norm": "none"}),
    "alexnet-bn": ("alexnet", "alexnet", {"norm": "batch"}),
    "alexnet-in": ("alexnet", "alexnet", {"norm": "instance"}),
    "lenet": ("lenet", "lenet", {}),
    "mlp": ("mlp", "mlp", {}),
}

# torchvision builder -> stage recipe of models/tv.py (``vit_tiny`` is a small ViT defined there)
TORCHVISION: dict[str, str] = {
    "mobilenet_v2": "features", "mobilenet_v3_small": "features", "mobilenet_v3_large": "features",
    "efficientnet_b0": "features", "efficientnet_b1": "features", "convnext_tiny": "convnext",
    "mnasnet0_5": "layers", "mnasnet1_0": "layers", "squeezenet1_1": "squeezenet", "densenet121": "densenet",
    "shufflenet_v2_x0_5": "shufflenet", "shufflenet_v2_x1_0": "shufflenet",
    "resnet18": "resnet", "resnet34": "resnet", "resnet50": "resnet", "resnext50_32x4d": "resnet",
    "wide_resnet50_2": "resnet", "regnet_x_400mf": "regnet", "regnet_y_400mf": "regnet",
    "vit_tiny": "vit", "vit_b_16": "vit", "vit_b_32": "vit",
}
TV_PREFIX = "tv-"

CONVNET_OPTIONS = {
    "in": ("norm", "instance"), "bn": ("norm", "batch"), "ln": ("norm", "layer"), "gn": ("norm", "group"),
    "nn": ("norm", "none"), "relu": ("act", "relu"), "sigmoid": ("act", "sigmoid"),
    "leakyrelu": ("act", "leakyrelu"), "avgpool": ("pool", "avg"), "maxpool": ("pool", "max"),
    "nopool": ("pool", "none"),
}
_SIZE = re.compile(r"^([wd])(\d+)$")




def _convnet_kwargs(name: str) -> dict[str, Any]:
    parts = name.split("-")
    if parts[0] != "convnet":
        raise UnknownArchitecture(name)
    kwargs: dict[str, Any] = {}
    for part in parts[1:]:
        if part in CONVNET_OPTIONS:
            key, value = CONVNET_OPTIONS[part]
        elif match := _SIZE.match(part):
            key, value = {"w": "width", "d": "depth"}[match.group(1)], int(match.group(2))
        else:
            raise UnknownArchitecture(name)
        if key in kwargs:
            raise UnknownArchitecture(name)
        kwargs[key] = value
    if not 1 <= kwargs.get("depth", 3) <= 8 or not 1 <= kwargs.get("width", 128) <= 4096:
        raise UnknownArchitecture(name)
    return kwargs


def resolve(name: str) -> tuple[str, str, dict[str, Any]]:
    """(module, factory, kwargs) for an architecture name; raises UnknownArchitecture."""
    if name in FIXED:
        return FIXED[name]
    if name.startswith(TV_PREFIX):
        if name[len(TV_PREFIX):] not in TORCHVISION:
            raise UnknownArchitecture(f"unknown torchvision architecture {name!r} (supported: {', '.join(torchvision_names())})")
        return ("tv", "torchvision_model", {"name": name[len(TV_PREFIX):]})
    try:
        return ("convnet", "convnet", _convnet_kwargs(name))
    except UnknownArchitecture:
        raise UnknownArchitecture(
            f"unknown architecture {name!r} (known: {', '.join(available())}, or a composed "
            "convnet name such as convnet-w512 / convnet-d4-bn, or tv-<torchvision model> such as tv-mobilenet_v2)") from None


def _family_layers(module: str, kwargs: dict[str, Any]) -> list[str]:
    if module == "convnet":
        return [f"block{i}" for i in range(1, kwargs.get("depth", 3) + 1)]
    if module == "resnet":
        return ["stem"] + [f"layer{s}_{b}" for s in range(1, 5) for b in range(2)]
    if module == "vgg":
        return [f"conv{i}" for i in range(1, 9)]
    if module == "alexnet":
        return [f"conv{i}" for i in range(1, 6)]
    if module == "lenet":
        return ["conv1", "conv2", "fc1", "fc2"]
    if module == "mlp":
        return ["fc1", "fc2"]
    raise KeyError(module)


# the official split of each family (a FIXED entry's ``official_split`` overrides it)
FAMILY_SPLIT = {"resnet": "layer4_0", "vgg": "conv5", "alexnet": "conv5", "lenet": "conv2", "mlp": "fc2"}


def default_split(name: str) -> str | None:
    """The layer an architecture is split at unless ``student_layer``/``teacher_layer`` says
    otherwise, without building it (None for ``tv-`` models, whose split depends on the build)."""
    module, _, kwargs = resolve(name)
    if module == "convnet":
        return f"block{kwargs.get('depth', 3)}"
    return kwargs.get("official_split", FAMILY_SPLIT.get(module))


def layer_names(name: str) -> list[str] | None:
    """Feature-stage names of an architecture without building it (None where only a build can tell)."""
    module, _, kwargs = resolve(name)
    try:
        return _family_layers(module, kwargs)
    except KeyError:
        return None


def is_known(name: str) -> bool:
    try:
        resolve(name)
    except UnknownArchitecture:
        return False
    return True


def available() -> list[str]:
    return ["convnet", "convnet-bn", "convnet-ln", "convnet-gn", "convnet-nn", "convnet-w512", *FIXED]


def torchvision_names() -> list[str]:
    return [TV_PREFIX + name for name in TORCHVISION]


def build(name: str, channels: int, num_classes: int, image_size: int, split: str | None = None):
    """Build a StagedNet by name; ``split`` overrides the official split layer."""
    module_name, factory, kwargs = resolve(name)
    module = importlib.import_module(f"elf_pipeline.models.{module_name}")
    model = getattr(module, factory)(channels, num_classes, image_size, split=split, **kwargs)
    _check_runs(model, name, channels, image_size)
    return model


def _check_runs(model, name: str, channels: int, image_size: int) -> None:
    """One blank image through the model in eval mode, so an image size the architecture cannot
    handle (features that vanish, a norm over a single value) fails at build time, clearly."""
    import torch

    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, image_size, image_size))
    except (RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"architecture {name!r} cannot run on {image_size}x{image_size} images ({first_line})") from None
    finally:
        model.train()
