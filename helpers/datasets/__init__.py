"""Object-detection datasets: import and export in Edge Impulse, Pascal VOC and COCO layouts.

Real files are messy; the importer repairs what it safely can and reports every repair:

- a `.jpg` that is really a PNG (detected by content) is renamed `.png`;
- RGBA, palette, grayscale, CMYK or 16-bit images are converted to RGB (alpha composited on
  white) and re-encoded (PNG, or JPEG when the source was JPEG); RGB files keep their bytes;
- an EXIF orientation other than 1 is baked out, so every decoder sees the annotated pixels;
- a VOC `<size>` of 0x0 (or one that disagrees with the file) takes the image's size;
- boxes partly outside the image are clipped; degenerate or wholly-outside boxes are skipped;
- labels are lower-cased and mapped through `class_map`; unknown classes are refused (with
  the mapping to fix it), skipped or kept, as asked;
- an annotation whose image is missing or unreadable is skipped.

Everything taken, fixed and skipped is counted in an `ImportReport`. The modules: `model` (the
types), `images`, `repair` (annotations as read -> a `Dataset`), one per layout (`edge_impulse`,
`voc`, `coco`; the labels file itself is `helpers.protocol.ei_labels`), and `layouts`
(`detect_format`, `import_dataset`, `export_dataset`).
"""
from helpers.datasets.images import dataset_from_arrays, normalize_image
from helpers.datasets.layouts import detect_format, export_dataset, import_dataset
from helpers.datasets.model import FORMATS, IMAGE_EXTENSIONS, SPLITS, Dataset, DatasetItem, ImportReport, Split

__all__ = [
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "Dataset",
    "DatasetItem",
    "ImportReport",
    "Split",
    "dataset_from_arrays",
    "detect_format",
    "export_dataset",
    "import_dataset",
    "normalize_image",
]
