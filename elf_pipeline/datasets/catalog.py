"""Plain tables about the supported datasets; no third-party imports (the Snakefile reads them).

``RELEASE_STATS`` holds, per dataset, the per-channel mean/std that each dataset-distillation code
normalises with (see ``RELEASE_CODES`` for the codes and their source files). They are a property
of the code that wrote a synthetic set, not of the dataset: for CIFAR-100 the DC/DSA/DM code uses
CIFAR-100's own statistics while MTT and ELF use CIFAR-10's. An import declares the releasing code
(``normalization: {published: mtt}``); a bare ``published`` is accepted only where every code agrees.

``PUBLISHED_STATS`` is what ``prepare_data`` records in ``data.h5`` as ``published_mean``/``published_std``
beside the statistics it computes on the prepared train split: the DC code's constants where it
covers the dataset, else the ones the codes share. Imports resolve their constants from
``RELEASE_STATS``, never from that record where the codes disagree.
"""

from __future__ import annotations

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# The CIFAR-10 std (0.2023, ...) of these codes is the widely copied one, not the per-pixel std of the
# train split (about 0.247, 0.243, 0.261); released sets use it, so it is kept as they have it.
CIFAR10_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
CIFAR100_MEAN_STD = ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762))

# code -> (what it is, the file that fixes its constants)
RELEASE_CODES: dict[str, tuple[str, str]] = {
    "dc": ("DC, DSA and DM (VICO-UoE/DatasetCondensation)", "utils.py, get_dataset"),
    "mtt": ("MTT (GeorgeCazenavette/mtt-distillation)", "utils.py, get_dataset"),
    "elf": ("ELF (Lirui-Zhao/ELF)", "utils.py, get_dataset"),
}

# dataset -> code -> (mean, std) of the code's non-ZCA normalisation
RELEASE_STATS: dict[str, dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "mnist": {"dc": ((0.1307,), (0.3081,))},
    "fashion_mnist": {"dc": ((0.2861,), (0.3530,))},
    "svhn": {"dc": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))},
    "cifar10": {"dc": CIFAR10_MEAN_STD, "mtt": CIFAR10_MEAN_STD, "elf": CIFAR10_MEAN_STD},
    # DC's current utils.py; MTT and ELF normalise CIFAR-100 with CIFAR-10's constants
    "cifar100": {"dc": CIFAR100_MEAN_STD, "mtt": CIFAR10_MEAN_STD, "elf": CIFAR10_MEAN_STD},
    "tiny_imagenet": {"dc": IMAGENET_MEAN_STD, "mtt": IMAGENET_MEAN_STD, "elf": IMAGENET_MEAN_STD},
    "imagenet": {"elf": IMAGENET_MEAN_STD},
}

# The 10-class ImageNet subsets of the dataset-distillation literature (MTT and its successors), by
# WordNet id.  The list order is the label order those papers use (label 0 = first id), so sets
# they release import with the right labels.
IMAGENET_SUBSETS: dict[str, tuple[str, ...]] = {
    # tench, English springer, cassette player, chain saw, church, French horn, garbage truck,
    # gas pump, golf ball, parachute
    "imagenette": ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                   "n03394916", "n03417042", "n03425413", "n03445777", "n03888257"),
    # Australian terrier, Border terrier, Samoyed, beagle, Shih-Tzu, English foxhound,
    # Rhodesian ridgeback, dingo, golden retriever, Old English sheepdog
    "imagewoof": ("n02096294", "n02093754", "n02111889", "n02088364", "n02086240",
                  "n02089973", "n02087394", "n02115641", "n02099601", "n02105641"),
    # pineapple, banana, strawberry, orange, lemon, pomegranate, fig, bell pepper, cucumber,
    # Granny Smith
    "imagefruit": ("n07753275", "n07753592", "n07745940", "n07747607", "n07749582",
                   "n07768694", "n07753113", "n07720875", "n07718472", "n07742313"),
    # bee, yellow lady's slipper, banana, lemon, corn, school bus, honeycomb, lion,
    # black and gold garden spider, goldfinch
    "imageyellow": ("n02206856", "n12057211", "n07753592", "n07749582", "n12144580",
                    "n04146614", "n03530642", "n02129165", "n01773157", "n01531178"),
    # tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat, lion, tiger, jaguar, snow leopard, lynx
    "imagemeow": ("n02123045", "n02123159", "n02123394", "n02123597", "n02124075",
                  "n02129165", "n02129604", "n02128925", "n02128757", "n02127052"),
    # peacock, flamingo, macaw, pelican, king penguin, bald eagle, toucan, ostrich, black swan,
    # sulphur-crested cockatoo
    "imagesquawk": ("n01806143", "n02007558", "n01818515", "n02051845", "n02056570",
                    "n01614925", "n01843383", "n01518878", "n01860187", "n01819313"),
}
for _name in IMAGENET_SUBSETS:
    RELEASE_STATS[_name] = {"mtt": IMAGENET_MEAN_STD, "elf": IMAGENET_MEAN_STD}

PUBLISHED_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    name: codes.get("dc", next(iter(codes.values()))) for name, codes in RELEASE_STATS.items()}

# channels of each source's images (image_folder: its ``channels`` option, default 3)
SOURCE_CHANNELS: dict[str, int] = {"digits": 1, "mnist": 1, "fashion_mnist": 1, "cifar10": 3, "cifar100": 3, "svhn": 3,
                                   "tiny_imagenet": 3, "imagenet": 3, "image_folder": 3,
                                   **{name: 3 for name in IMAGENET_SUBSETS}}


def _label(code_or_codes: str | list[str]) -> str:
    codes = [code_or_codes] if isinstance(code_or_codes, str) else code_or_codes
    return " / ".join(RELEASE_CODES[c][0].split(" (")[0] for c in codes)


def _numbers(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def release_stats(source: str, normalization: object) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The (mean, std) that ``normalization`` of an imported set decodes with for ``source``:
    ``published`` (where every code agrees), ``{published: <code>}`` or ``{mean: [...], std: [...]}``;
    None for ``dataset``, ``unit`` and ``uint8``. Raises ValueError with a one-line reason."""
    if isinstance(normalization, dict) and "mean" in normalization:
        mean, std = tuple(normalization["mean"]), tuple(normalization.get("std") or ())
        channels = SOURCE_CHANNELS.get(source)
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values but std {len(std)}")
        if channels is not None and source != "image_folder" and len(mean) != channels:
            raise ValueError(f"{len(mean)} mean/std values but {source} has {channels} channel(s)")
        if min(std) <= 0:
            raise ValueError("every std must be positive")
        return mean, std
    codes = RELEASE_STATS.get(source, {})
    if isinstance(normalization, dict):
        code = normalization.get("published")
        if code not in codes:
            known = ", ".join(f"published: {c}" for c in codes) or "none"
            raise ValueError(f"no constants of code {code!r} for {source} (known: {known}); give mean and std instead")
        return codes[code]
    if normalization != "published":
        return None
    if not codes:
        raise ValueError(f"no published statistics for source {source}; declare dataset, unit or uint8, or give mean and std")
    distinct: dict[tuple, list[str]] = {}
    for code, stats in codes.items():
        distinct.setdefault(stats, []).append(code)
    if len(distinct) > 1:
        choices = " or ".join(f"{{published: {group[0]}}} ({_label(group)}: mean {_numbers(stats[0])}, std {_numbers(stats[1])})"
                              for stats, group in distinct.items())
        raise ValueError(f"the codes that release {source} sets normalise it differently; name the code that wrote "
                         f"the file: {choices}")
    return next(iter(codes.values()))

# source name -> what its ``root`` must hold (used in messages and the README)
ROOT_LAYOUT: dict[str, str] = {
    "digits": "nothing (scikit-learn ships the images)",
    "fashion_mnist": "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                     "t10k-labels-idx1-ubyte.gz (or uncompressed)",
    "mnist": "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
             "t10k-labels-idx1-ubyte.gz (or uncompressed, or torchvision's MNIST/raw/)",
    "cifar10": "cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta",
    "cifar100": "cifar-100-python/ with train, test and meta",
    "svhn": "train_32x32.mat and test_32x32.mat",
    "tiny_imagenet": "tiny-imagenet-200/ (or its contents): wnids.txt, train/<wnid>/images/*.JPEG, "
                     "val/images/*.JPEG and val/val_annotations.txt",
    "imagenet": "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG",
    "image_folder": "train/<class>/* and test/<class>/* (or val/), or <class>/* split by test_fraction",
}
for _name in IMAGENET_SUBSETS:
    ROOT_LAYOUT[_name] = ROOT_LAYOUT["imagenet"]

# torchvision can fetch these when the dataset block says ``download: true`` and a network exists
DOWNLOADABLE = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")
# sources without a test split of their own: the test split is drawn with test_fraction/split_seed
SPLIT_BY_FRACTION = ("digits", "image_folder")
IMAGENET_SOURCES = ("imagenet", *IMAGENET_SUBSETS)
# decoded from image files one chunk at a time (never held whole in memory)
FILE_SOURCES = ("tiny_imagenet", "image_folder", *IMAGENET_SOURCES)
