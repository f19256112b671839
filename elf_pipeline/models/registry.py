"""Architecture names -> constructors.

Importing this module does not import torch (the workflow validates names while parsing the
Snakefile); the model modules are imported when a model is built.

ConvNet names compose: ``convnet`` plus any of ``-w<width>``, ``-d<depth>``, a norm
(``-in`` instance, ``-bn``, ``-ln``, ``-gn``, ``-nn`` none), an activation (``-relu``, ``-sigmoid``,
``-leakyrelu``) and a pooling (``-avgpool``, ``-maxpool``, ``-nopool``); e.g. ``convnet-w512``,
``convnet-d4-bn``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

# name -> (module, factory, keyword arguments)
FIXED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "resnet18": ("resnet", "resnet18", {"norm": "instance"}),
    "resnet18-bn": ("resnet", "resnet18", {"norm": "batch"}),
    "resnet18-imagenet": ("resnet", "resnet18", {"norm": "instance", "stem": "imagenet"}),
    "resnet18-bn-imagenet": ("resnet", "resnet18", {"norm": "batch", "stem": "imagenet"}),
    "vgg11": ("vgg", "vgg11", {"norm": "instance"}),
    "vgg11-bn": ("vgg", "vgg11", {"norm": "batch"}),
    "alexnet": ("alexnet", "alexnet", {"norm": "none"}),
    "alexnet-bn": ("alexnet", "alexnet", {"norm": "batch"}),
}

CONVNET_OPTIONS = {
    "in": ("norm", "instance"), "bn": ("norm", "batch"), "ln": ("norm", "layer"), "gn": ("norm", "group"),
    "nn": ("norm", "none"), "relu": ("act", "relu"), "sigmoid": ("act", "sigmoid"),
    "leakyrelu": ("act", "leakyrelu"), "avgpool": ("pool", "avg"), "maxpool": ("pool", "max"),
    "nopool": ("pool", "none"),
}
_SIZE = re.compile(r"^([wd])(\d+)$")


class UnknownArchitecture(ValueError):
    pass


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
    try:
        return ("convnet", "convnet", _convnet_kwargs(name))
    except UnknownArchitecture:
        raise UnknownArchitecture(
            f"unknown architecture {name!r} (known: {', '.join(available())}, or a composed "
            "convnet name such as convnet-w512 / convnet-d4-bn)") from None


def _family_layers(module: str, kwargs: dict[str, Any]) -> list[str]:
    if module == "convnet":
        return [f"block{i}" for i in range(1, kwargs.get("depth", 3) + 1)]
    if module == "resnet":
        return ["stem"] + [f"layer{s}_{b}" for s in range(1, 5) for b in range(2)]
    if module == "vgg":
        return [f"conv{i}" for i in range(1, 9)]
    if module == "alexnet":
        return [f"conv{i}" for i in range(1, 6)]
    raise KeyError(module)


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


def build(name: str, channels: int, num_classes: int, image_size: int, split: str | None = None):
    """Build a StagedNet by name; ``split`` overrides the official split layer."""
    module_name, factory, kwargs = resolve(name)
    module = importlib.import_module(f"elf_pipeline.models.{module_name}")
    return getattr(module, factory)(channels, num_classes, image_size, split=split, **kwargs)
