"""Plain tables about the supported datasets; no third-party imports (the Snakefile reads them).

``PUBLISHED_STATS`` are the per-channel mean/std that the dataset-distillation reference code
(DC/DSA/DM, MTT, DATM) normalises with.  ``prepare_data`` still normalises with statistics it
computes on the prepared train split; the published ones are recorded beside them so a synthetic
set released in "published" normalisation can be converted exactly.
"""

from __future__ import annotations

IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

PUBLISHED_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2861,), (0.3530,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    # The reference code's CIFAR-10 std (0.2023, ...) is the widely copied one, not the per-pixel
    # std of the train split (about 0.247, 0.243, 0.261); released sets use it, so it is kept here.
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny_imagenet": IMAGENET_MEAN_STD,
    "imagenet": IMAGENET_MEAN_STD,
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
    PUBLISHED_STATS[_name] = IMAGENET_MEAN_STD

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
