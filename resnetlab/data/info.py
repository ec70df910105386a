"""What the trainer must know about each built-in dataset, before reading a byte of it.

Mean and std are the published per-channel statistics of each training set
(pixels scaled to [0, 1]); the tests recompute them from the real files.
"""

from __future__ import annotations

from dataclasses import dataclass

from resnetlab.errors import UserError


class DataWarning(UserWarning):
    """The data differs from the official release (size, checksum) but passed validation."""


@dataclass(frozen=True)
class DatasetInfo:
    """Shapes, classes and statistics of a dataset, known without reading its files."""

    name: str
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
    num_train: int
    num_test: int


# torchvision's class names, so predictions read the same as with torchvision.
_MNIST_CLASSES = (
    "0 - zero",
    "1 - one",
    "2 - two",
    "3 - three",
    "4 - four",
    "5 - five",
    "6 - six",
    "7 - seven",
    "8 - eight",
    "9 - nine",
)
_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# `fine_label_names` of cifar-100-python/meta (alphabetical).
_CIFAR100_CLASSES = tuple(
    [
        "apple",
        "aquarium_fish",
        "baby",
        "bear",
        "beaver",
        "bed",
        "bee",
        "beetle",
        "bicycle",
        "bottle",
        "bowl",
        "boy",
        "bridge",
        "bus",
        "butterfly",
        "camel",
        "can",
        "castle",
        "caterpillar",
        "cattle",
        "chair",
        "chimpanzee",
        "clock",
        "cloud",
        "cockroach",
        "couch",
        "crab",
        "crocodile",
        "cup",
        "dinosaur",
        "dolphin",
        "elephant",
        "flatfish",
        "forest",
        "fox",
        "girl",
        "hamster",
        "house",
        "kangaroo",
        "keyboard",
        "lamp",
        "lawn_mower",
        "leopard",
        "lion",
        "lizard",
        "lobster",
        "man",
        "maple_tree",
        "motorcycle",
        "mountain",
        "mouse",
        "mushroom",
        "oak_tree",
        "orange",
        "orchid",
        "otter",
        "palm_tree",
        "pear",
        "pickup_truck",
        "pine_tree",
        "plain",
        "plate",
        "poppy",
        "porcupine",
        "possum",
        "rabbit",
        "raccoon",
        "ray",
        "road",
        "rocket",
        "rose",
        "sea",
        "seal",
        "shark",
        "shrew",
        "skunk",
        "skyscraper",
        "snail",
        "snake",
        "spider",
        "squirrel",
        "streetcar",
        "sunflower",
        "sweet_pepper",
        "table",
        "tank",
        "telephone",
        "television",
        "tiger",
        "tractor",
        "train",
        "trout",
        "tulip",
        "turtle",
        "wardrobe",
        "whale",
        "willow_tree",
        "wolf",
        "woman",
        "worm",
    ]
)

DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        "mnist", 10, 1, (28, 28), (0.1307,), (0.3081,), _MNIST_CLASSES, 60_000, 10_000
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", 10, 1, (28, 28), (0.2860,), (0.3530,), _FASHION_CLASSES, 60_000, 10_000
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        10,
        3,
        (32, 32),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        _CIFAR10_CLASSES,
        50_000,
        10_000,
    ),
    "cifar100": DatasetInfo(
        "cifar100",
        100,
        3,
        (32, 32),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        _CIFAR100_CLASSES,
        50_000,
        10_000,
    ),
}

# ImageNet statistics: the usual choice for image folders (torchvision's reference scripts).
FOLDER_MEAN = (0.485, 0.456, 0.406)
FOLDER_STD = (0.229, 0.224, 0.225)


def get_info(name: str) -> DatasetInfo:
    """Look a dataset up, with an error that lists the known names."""
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join([*DATASETS, "folder"])
        raise UserError(f"unknown dataset {name!r}; known: {known}") from None
