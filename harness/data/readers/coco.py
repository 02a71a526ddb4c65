"""COCO 2017 for frozen-backbone detection (evals.md §6.3): ``annotations/instances_train2017.json``,
``annotations/instances_val2017.json`` and the images in ``train2017/`` and ``val2017/``.

Only the scan lives here (``harness data check coco``, and the refusal of an incomplete tree
before a detector trains on it); the images are read by detectron2's own COCO loader in
``harness.eval.detection``, which maps the category ids the same way for every split.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.data.readers.base import FIXTURES, Inventory, short

SPLITS = ("train2017", "val2017")
FIX = (
    "COCO 2017 is <root>/annotations/instances_{train,val}2017.json with the images in "
    f"<root>/train2017/ and <root>/val2017/; {FIXTURES}"
)


def annotation_file(root: Path, split: str) -> Path:
    return Path(root) / "annotations" / f"instances_{split}.json"


def _scan_split(root: Path, split: str) -> tuple[dict, list[str], tuple]:
    """(what one split holds, its problems, its categories as sorted (id, name) pairs): the
    JSON's keys, the image files it names, ids."""
    path, folder = annotation_file(root, split), Path(root) / split
    if not path.is_file():
        return {}, [f"{path} does not exist: {FIX}"], ()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return {}, [f"{path} is not readable JSON ({type(e).__name__}): re-extract it"], ()
    missing = [k for k in ("images", "annotations", "categories") if k not in doc]
    if not isinstance(doc, dict) or missing:
        return {}, [f"{path} lacks {', '.join(missing) or 'a top-level object'}: {FIX}"], ()
    images, anns, cats = doc["images"], doc["annotations"], doc["categories"]
    found = {"images": len(images), "annotations": len(anns), "categories": len(cats)}
    problems = []
    if not folder.is_dir():
        return found, [f"image folder {folder} does not exist: {FIX}"], ()
    try:
        ids = {im["id"] for im in images}
        names = [im["file_name"] for im in images]
        cat_ids = {c["id"] for c in cats}
    except (KeyError, TypeError):
        return found, [f"{path}: an image or category lacks its id or file_name: {FIX}"], ()
    on_disk = {e.name for e in os.scandir(folder)}
    absent = [n for n in names if n not in on_disk]
    if absent:
        problems.append(
            f"{len(absent)} of the {len(names)} images named in {path.name} are not in "
            f"{folder} (e.g. {absent[0]}): re-extract {split}.zip"
        )
    bad_img = [a.get("id") for a in anns if a.get("image_id") not in ids]
    bad_cat = [a.get("id") for a in anns if a.get("category_id") not in cat_ids]
    bad_box = [
        a.get("id")
        for a in anns
        if not (isinstance(a.get("bbox"), list) and len(a["bbox"]) == 4 and min(a["bbox"][2:]) >= 0)
    ]
    for what, bad in (
        ("an image id not among its images", bad_img),
        ("a category id not among its categories", bad_cat),
        ("no [x, y, w, h] bbox with w, h >= 0", bad_box),
    ):
        if bad:
            problems.append(
                f"{len(bad)} annotation(s) in {path} have {what} (ids {short(bad, 3)}): {FIX}"
            )
    found["category names"] = short(c.get("name") for c in cats)
    return found, problems, tuple(sorted((c["id"], str(c.get("name"))) for c in cats))


class COCO:
    """``harness data check coco``: per split, images, annotations and categories found, and
    the problems (a missing file, an image the JSON names but the folder lacks, a dangling id)."""

    title = "COCO 2017"

    @classmethod
    def inventory(cls, root) -> Inventory:
        root = Path(root)
        inv = Inventory(cls.title, root)
        if not root.is_dir():
            inv.problems.append(f"{root} does not exist: {FIX}")
            return inv
        cats = {}
        for split in SPLITS:
            found, problems, cats[split] = _scan_split(root, split)
            for k, v in found.items():
                inv.found[f"{split} {k}"] = v
            inv.problems += problems
        if all(cats.values()) and cats["train2017"] != cats["val2017"]:
            inv.problems.append(
                f"train2017 and val2017 list different categories under {root / 'annotations'}: "
                "a detector trained on one cannot be scored on the other"
            )
        return inv
