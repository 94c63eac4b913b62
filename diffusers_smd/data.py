"""Training images: the built-in digits, an image folder, or a Hub data set, as [-1, 1] tensors (with captions
for text-to-image training).

Three sources, chosen like diffusers' ``train_unconditional.py`` chooses them:

* ``dataset_name="digits"`` (the default): scikit-learn's bundled 8x8 digits, resized to the
  training resolution by :func:`diffusers_smd.digits.load_digits_images` (no download).
* ``train_data_dir=...``: a folder of images read with ``datasets``' ``"imagefolder"`` builder.
* ``dataset_name=...``: any other name is a Hub data set (or a local data set folder).

Every image becomes a ``(num_channels, resolution, resolution)`` float tensor in [-1, 1]:
greyscale, RGB, RGBA (composited on a white background), palette and mixed-size images are
all accepted; the shorter side is resized to ``resolution`` (bilinear, as in diffusers'
example) and the square is cropped from the centre or at random.

Captioned data (:func:`load_captioned_images`, text-to-image training, as diffusers'
``train_text_to_image.py`` reads it): an image folder with a ``metadata.jsonl`` of captions, a Hub or
local data set, or a ``datasets.Dataset`` given in Python, with an image and a caption column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

__all__ = [
    "BUILTIN_DIGITS",
    "CaptionedImages",
    "PreparedImage",
    "TrainingImages",
    "check_caption_column",
    "choose_caption",
    "find_image_column",
    "image_to_tensor",
    "infer_num_channels",
    "load_captioned_images",
    "load_training_images",
    "prepare_image",
    "unreadable_images",
]

BUILTIN_DIGITS = "digits"
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _looks_like_local_path(name: str) -> bool:
    """Hub names are ``name`` or ``owner/name``; anything else with a slash is meant as a folder."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _flatten_to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL image to ``"L"`` or ``"RGB"``; transparency is composited on white."""
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("I", "I;16", "F"):
        array = np.asarray(image, dtype=np.float64)
        span = max(float(array.max() - array.min()), 1e-12)
        image = Image.fromarray(np.uint8(np.round(255 * (array - array.min()) / span)))
    return image.convert(mode)


@dataclass(frozen=True)
class PreparedImage:
    """A training image and where it came from (SDXL conditions its UNet on both sizes and the crop)."""

    #: ``(num_channels, resolution, resolution)`` in [-1, 1].
    tensor: torch.Tensor
    #: ``(height, width)`` of the image as stored, before resizing.
    original_size: tuple[int, int]
    #: ``(top, left)`` of the crop in the resized image, as the model sees it (after the flip, if any).
    crop_top_left: tuple[int, int]


def prepare_image(
    image: Image.Image,
    resolution: int,
    num_channels: int,
    center_crop: bool = True,
    random_flip: bool = False,
    generator: torch.Generator | None = None,
) -> PreparedImage:
    """One PIL image -> :class:`PreparedImage`: the ``(num_channels, resolution, resolution)`` tensor in [-1, 1]
    and its original size and crop corner.

    Resize the shorter side to ``resolution`` (bilinear), crop a square (centre, or a random
    offset drawn from ``generator``), optionally flip left-right with probability 1/2, and map
    pixel values ``v`` in [0, 255] to ``v / 127.5 - 1``. A flipped crop's corner is reported in the
    flipped image (``left = width - left - resolution``), as diffusers' SDXL script reports it.
    """
    if num_channels not in (1, 3):
        raise ValueError(f"num_channels must be 1 or 3, got {num_channels!r}")
    original_size = (image.height, image.width)
    image = _flatten_to_mode(image, "L" if num_channels == 1 else "RGB")
    width, height = image.size
    scale = resolution / min(width, height)
    new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(new_size, Image.Resampling.BILINEAR)
    extra_w, extra_h = new_size[0] - resolution, new_size[1] - resolution
    if center_crop:
        left, top = extra_w // 2, extra_h // 2
    else:
        left = int(torch.randint(extra_w + 1, (), generator=generator).item())
        top = int(torch.randint(extra_h + 1, (), generator=generator).item())
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32).reshape(resolution, resolution, num_channels)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1) / 127.5 - 1.0
    if random_flip and torch.rand((), generator=generator) < 0.5:
        tensor = tensor.flip(-1)
        left = extra_w - left
    return PreparedImage(tensor, original_size, (top, left))


def image_to_tensor(
    image: Image.Image,
    resolution: int,
    num_channels: int,
    center_crop: bool = True,
    random_flip: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One PIL image -> ``(num_channels, resolution, resolution)`` tensor in [-1, 1] (:func:`prepare_image`)."""
    return prepare_image(image, resolution, num_channels, center_crop, random_flip, generator).tensor


def find_image_column(column_names: Sequence[str], features=None, image_column: str | None = None) -> str:
    """The column holding images: ``image_column`` if given, else an Image feature, else "image"/"img"."""
    if image_column is not None:
        if image_column not in column_names:
            raise ValueError(
                f"--image_column {image_column!r} is not a column of the data set; columns: {list(column_names)}"
            )
        return image_column
    if features is not None:
        import datasets

        for name, feature in features.items():
            if isinstance(feature, datasets.Image):
                return name
    for name in ("image", "img", "images", "pixel_values"):
        if name in column_names:
            return name
    raise ValueError(f"no image column found among {list(column_names)}; pass --image_column")


def unreadable_images(dataset, column: str, limit: int | None = None) -> list[str]:
    """Paths (or row numbers) of the images in ``dataset[column]`` that PIL cannot read, checked before training.

    Reads each file's header and structure with ``PIL.Image.verify`` (no full decode), so a corrupt or
    truncated file fails here, not at the training step that first draws it. ``limit`` stops after that many.
    """
    import io

    import datasets

    raw = dataset.cast_column(column, datasets.Image(decode=False))
    bad = []
    for index, entry in enumerate(raw[column]):
        name = entry.get("path") or f"row {index}"
        try:
            source = io.BytesIO(entry["bytes"]) if entry.get("bytes") else entry["path"]
            with Image.open(source) as image:
                image.verify()
        except Exception:  # PIL raises many types for bad files; all mean "cannot be read"
            bad.append(name)
            if limit is not None and len(bad) >= limit:
                break
    return bad


def infer_num_channels(image: Image.Image) -> int:
    """1 for greyscale images (with or without alpha), 3 for everything else."""
    return 1 if image.mode in _GREY_MODES else 3


class TrainingImages(torch.utils.data.Dataset):
    """A map-style data set yielding ``{"input": (C, R, R) tensor in [-1, 1]}``.

    ``name`` is the source as the user named it (``digits``, a Hub id or a folder) and ``kind`` one of
    :data:`diffusers_smd.training.summary.DATASET_KINDS`; the run summary records both and ``len()``.

    Wraps either a ready tensor of images (the built-in digits) or a ``datasets.Dataset``
    whose ``image_column`` holds PIL images, converted on access by :func:`image_to_tensor`.

    Random crops and flips never touch torch's global RNG: item ``i`` of epoch ``e`` draws from
    a generator seeded with ``(augmentation_seed, e, i)``. Data loaders fetch batches ahead of
    the training step, so augmentations drawn from a shared stream would shift when a run is
    resumed from a checkpoint; per-item seeds make a resumed run see exactly the same images.
    Call :meth:`set_epoch` at the start of each epoch.
    """

    def __init__(
        self,
        source,
        resolution: int,
        num_channels: int,
        center_crop: bool = True,
        random_flip: bool = False,
        image_column: str | None = None,
        name: str = "",
        kind: str = "memory",
        augmentation_seed: int = 0,
    ):
        self.source = source
        self.resolution = resolution
        self.num_channels = num_channels
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.image_column = image_column
        self.name = name
        self.kind = kind
        self.augmentation_seed = augmentation_seed
        self.epoch = 0

    @property
    def description(self) -> str:
        """One line for logs: the source and the number of images."""
        return f"{self.name} ({len(self)} images)"

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentations the next items use."""
        self.epoch = epoch

    def _generator(self, index: int) -> torch.Generator:
        seed = hash((self.augmentation_seed, self.epoch, int(index))) % (2**63)
        return torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = self._generator(index) if self.random_flip or not self.center_crop else None
        if isinstance(self.source, torch.Tensor):
            tensor = self.source[index]
            if self.random_flip and torch.rand((), generator=generator) < 0.5:
                tensor = tensor.flip(-1)
            return {"input": tensor}
        image = self.source[int(index)][self.image_column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        tensor = image_to_tensor(
            image, self.resolution, self.num_channels, self.center_crop, self.random_flip, generator=generator
        )
        return {"input": tensor}


def choose_caption(value, generator: torch.Generator | None = None, proportion_empty: float = 0.0) -> str:
    """The training caption of one example, as diffusers' text-to-image scripts pick it.

    A string is used as is; from a list of strings one is drawn (uniformly, from ``generator``); then, with
    probability ``proportion_empty`` (drawn from ``generator``), the caption becomes the empty prompt "",
    which trains the unconditional prediction that classifier-free guidance needs.
    """
    if isinstance(value, str):
        caption = value
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        caption = value[int(torch.randint(len(value), (), generator=generator).item())]
    else:
        raise ValueError(f"a caption must be a string or a non-empty list of strings, got {value!r}")
    if proportion_empty > 0 and torch.rand((), generator=generator) < proportion_empty:
        return ""
    return caption


def check_caption_column(dataset, caption_column: str, *, hint: str = "") -> None:
    """Raise ValueError naming ``--caption_column`` unless it is a column whose every row is a caption
    (a string or a non-empty list of strings); checked once, before training."""
    if caption_column not in dataset.column_names:
        raise ValueError(
            f"--caption_column {caption_column!r} is not a column of the data set; columns: "
            f"{list(dataset.column_names)}{hint}"
        )
    for row, value in enumerate(dataset[caption_column]):
        try:
            choose_caption(value)
        except ValueError:
            raise ValueError(
                f"--caption_column {caption_column!r}: row {row} holds {value!r}; every caption must be a string "
                "or a non-empty list of strings"
            ) from None


class CaptionedImages(TrainingImages):
    """A map-style data set of captioned images for text-to-image training.

    Item ``i``: ``{"input": (C, R, R) tensor in [-1, 1], "caption": str, "original_size": (height, width),
    "crop_top_left": (top, left)}`` (sizes as int64 tensors; SDXL's added time ids are made of them). The
    crop, flip, the caption picked from a list and the empty-prompt draw (``proportion_empty_prompts``) all
    come from the item's own generator (seed, epoch, index), so a resumed run sees exactly the same examples.
    """

    def __init__(
        self, source, resolution: int, caption_column: str, proportion_empty_prompts: float = 0.0, **kwargs
    ):
        super().__init__(source, resolution, 3, **kwargs)
        self.caption_column = caption_column
        self.proportion_empty_prompts = proportion_empty_prompts

    def __getitem__(self, index: int) -> dict:
        generator = self._generator(index)
        row = self.source[int(index)]
        image = row[self.image_column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        prepared = prepare_image(
            image, self.resolution, self.num_channels, self.center_crop, self.random_flip, generator=generator
        )
        return {
            "input": prepared.tensor,
            "caption": choose_caption(row[self.caption_column], generator, self.proportion_empty_prompts),
            "original_size": torch.tensor(prepared.original_size),
            "crop_top_left": torch.tensor(prepared.crop_top_left),
        }


def _load_digits(resolution: int, num_channels: int | None) -> torch.Tensor:
    from .digits import load_digits_images

    images, _ = load_digits_images(split="train", resolution=resolution)
    if num_channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    elif num_channels not in (None, 1):
        raise ValueError(f"--num_channels must be 1 or 3, got {num_channels!r}")
    return images


def _load_hf_dataset(dataset_name, dataset_config_name, train_data_dir, cache_dir):
    import datasets

    if train_data_dir is not None:
        if not os.path.isdir(train_data_dir):
            raise ValueError(f"--train_data_dir {train_data_dir!r} is not an existing folder")
        try:
            return datasets.load_dataset(
                "imagefolder", data_dir=train_data_dir, cache_dir=cache_dir, split="train"
            )
        except Exception as error:  # datasets raises many types; name the flag
            raise ValueError(
                f"--train_data_dir {train_data_dir!r}: no images could be read ({error})"
            ) from error
    if _looks_like_local_path(dataset_name) and not os.path.exists(os.path.expanduser(dataset_name)):
        raise ValueError(f"--dataset_name {dataset_name!r}: no such local data set folder")
    try:
        return datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir, split="train")
    except Exception as error:
        raise ValueError(
            f"--dataset_name {dataset_name!r} could not be loaded ({type(error).__name__}: {error}). "
            f"Use a Hub data set name, a local data set folder, --train_data_dir for an image folder, "
            f"or {BUILTIN_DIGITS!r} for the built-in digits."
        ) from error


def _open_image_dataset(
    dataset_name, dataset_config_name, train_data_dir, cache_dir, image_column, max_samples, dataset=None
):
    """``(datasets.Dataset, image column, name, kind)`` of an image folder, a Hub / local data set or a given
    ``dataset``; checked: not empty, an image column, and (local folders) every image readable."""
    if dataset is not None:
        flag, source, kind = (
            "train_dataset",
            getattr(dataset.info, "dataset_name", None) or "datasets.Dataset",
            "memory",
        )
    else:
        dataset = _load_hf_dataset(dataset_name, dataset_config_name, train_data_dir, cache_dir)
        flag = "--train_data_dir" if train_data_dir is not None else "--dataset_name"
        if train_data_dir is not None or _looks_like_local_path(dataset_name) or os.path.isdir(dataset_name):
            source, kind = train_data_dir or dataset_name, "folder"
        else:
            source, kind = dataset_name, "hub"
    if len(dataset) == 0:
        raise ValueError(f"{flag}: the data set holds no images")
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    column = find_image_column(dataset.column_names, getattr(dataset, "features", None), image_column)
    if train_data_dir is not None:  # local files: check every image now rather than at the step that draws it
        bad = unreadable_images(dataset, column)
        if bad:
            shown = ", ".join(os.path.basename(str(name)) for name in bad[:5])
            raise ValueError(
                f"--train_data_dir {train_data_dir!r}: {len(bad)} of {len(dataset)} images cannot be read ({shown}"
                f"{', ...' if len(bad) > 5 else ''}); remove or replace them"
            )
    return dataset, column, source, kind


def load_training_images(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    resolution: int = 16,
    num_channels: int | None = None,
    center_crop: bool = True,
    random_flip: bool = False,
    cache_dir: str | None = None,
    image_column: str | None = None,
    augmentation_seed: int = 0,
    max_samples: int | None = None,
) -> TrainingImages:
    """Load the training images from the source the flags name (see the module docstring).

    ``num_channels`` None means: 1 for the digits, otherwise 1 if the first image is
    greyscale and 3 if not. Raises ValueError naming the flag when the source does not exist,
    cannot be read, or holds no images. ``max_samples`` keeps only the first that many images.
    """
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"--resolution must be a positive integer, got {resolution!r}")
    if num_channels not in (None, 1, 3):
        raise ValueError(f"--num_channels must be 1 or 3, got {num_channels!r}")
    if dataset_name is not None and train_data_dir is not None:
        raise ValueError("give either --dataset_name or --train_data_dir, not both")
    if train_data_dir is None and dataset_name in (None, BUILTIN_DIGITS):
        images = _load_digits(resolution, num_channels)[:max_samples]
        return TrainingImages(
            images,
            resolution,
            images.shape[1],
            center_crop,
            random_flip,
            name=BUILTIN_DIGITS,
            kind="builtin",
            augmentation_seed=augmentation_seed,
        )
    dataset, column, source, kind = _open_image_dataset(
        dataset_name, dataset_config_name, train_data_dir, cache_dir, image_column, max_samples
    )
    if num_channels is None:
        first = dataset[0][column]
        num_channels = infer_num_channels(first) if isinstance(first, Image.Image) else 3
    return TrainingImages(
        dataset,
        resolution,
        num_channels,
        center_crop,
        random_flip,
        image_column=column,
        name=source,
        kind=kind,
        augmentation_seed=augmentation_seed,
    )


def load_captioned_images(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_data_dir: str | None = None,
    *,
    dataset=None,
    resolution: int,
    image_column: str | None = None,
    caption_column: str = "text",
    center_crop: bool = False,
    random_flip: bool = False,
    proportion_empty_prompts: float = 0.0,
    cache_dir: str | None = None,
    augmentation_seed: int = 0,
    max_samples: int | None = None,
) -> CaptionedImages:
    """Captioned RGB training images from an image folder with ``metadata.jsonl`` (``train_data_dir``), a Hub or
    local data set (``dataset_name``) or a ``datasets.Dataset`` given in Python (``dataset``).

    Checked before training, each error naming the flag: the source exists and holds images, the image
    column (given or detected) and the caption column exist, every caption is a string or a list of strings,
    and (folders) every image can be read.
    """
    if not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"--resolution must be a positive integer, got {resolution!r}")
    given = {"--dataset_name": dataset_name, "--train_data_dir": train_data_dir, "train_dataset": dataset}
    sources = [name for name, value in given.items() if value is not None]
    if len(sources) != 1:
        raise ValueError(
            "give exactly one data source: --dataset_name (a Hub or local data set), --train_data_dir (an image "
            f"folder with metadata.jsonl captions) or a datasets.Dataset in Python; got {sources or 'none'}"
        )
    dataset, column, source, kind = _open_image_dataset(
        dataset_name, dataset_config_name, train_data_dir, cache_dir, image_column, max_samples, dataset
    )
    hint = ""
    if train_data_dir is not None:
        hint = (
            "; an image folder needs a metadata.jsonl with one line per image, e.g. "
            '{"file_name": "0001.png", "text": "a caption"}'
        )
    check_caption_column(dataset, caption_column, hint=hint)
    return CaptionedImages(
        dataset,
        resolution,
        caption_column,
        proportion_empty_prompts,
        center_crop=center_crop,
        random_flip=random_flip,
        image_column=column,
        name=source,
        kind=kind,
        augmentation_seed=augmentation_seed,
    )
