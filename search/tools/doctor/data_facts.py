"""Facts about the data in use and the findings they support (size, aspect, duplicates, imbalance, ...).

Everything comes from the loaded :class:`~search.data.datasets.ImageSet`: its labels and splits,
and the cache build's per-image records (original width and height, grayscale, digest), so the
image files are never read for the facts.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from search.data.datasets import SKIPPED_NAMED, ImageSet, skipped_summary
from search.tools.doctor.findings import FEW_IMAGES, IMBALANCE_RATIO, OFF_SQUARE, Finding, size_ceiling
from search.core.spec import DatasetSpec
from search.train.loop import TrainResult

SPLITS = ("train", "val", "test")


def data_facts(data: ImageSet, spec: DatasetSpec) -> dict[str, Any]:
    """Counts, sizes, aspect ratios, grayscale-ness and duplicates of the images in use."""
    idx = torch.cat([data.train, data.val, data.test])
    counts = {split: data.class_counts(split) for split in SPLITS}
    sizes = original_sizes(data, idx)
    ws, hs = [w for w, _ in sizes], [h for _, h in sizes]
    aspects = [max(w, h) / max(1, min(w, h)) for w, h in sizes]
    return {
        "n_images": len(idx),
        "splits": {split: len(getattr(data, split)) for split in SPLITS},
        "per_class": {c: {s: counts[s][i] for s in counts} for i, c in enumerate(data.classes)},
        "train_per_class": dict(zip(data.classes, counts["train"])),
        "sizes": {
            "min": [min(ws), min(hs)], "median": [int(statistics.median(ws)), int(statistics.median(hs))],
            "max": [max(ws), max(hs)], "uniform": len(set(sizes)) == 1,
            "median_aspect": round(statistics.median(w / max(1, h) for w, h in sizes), 3),
            "share_not_square": round(sum(a > OFF_SQUARE for a in aspects) / len(aspects), 4),
            "cache_max_side": spec.cache_max_side,
        },
        "grayscale": grayscale(data, idx),
        "duplicates": duplicates(data),
        "unreadable": int(data.info.get("skipped_images", 0) or 0),
        "unreadable_files": [list(f) for f in list(data.info.get("skipped_files") or [])[:SKIPPED_NAMED]],
        "unreadable_summary": skipped_summary(data.info),
        "split_from": split_sources(data),
    }


def split_sources(data: ImageSet) -> dict[str, str]:
    """Where the validation and test splits came from: ``folder`` (the dataset's own val/ or test/
    folder, or a CSV's split column) or ``carved`` (taken out of train by val_fraction/test_fraction)."""
    found = data.info.get("split_from")
    return dict(found) if isinstance(found, dict) else {"val": "carved", "test": "carved"}


def original_sizes(data: ImageSet, idx: torch.Tensor) -> list[tuple[int, int]]:
    """(width, height) per image before caching, as the cache build recorded them."""
    rows = idx.numpy()
    return list(zip(data.meta["width"][rows].tolist(), data.meta["height"][rows].tolist()))


def grayscale(data: ImageSet, idx: torch.Tensor) -> bool:
    """R = G = B in every image (recorded per image by the cache build)."""
    return bool(data.meta["gray"][idx.numpy()].all())


def duplicates(data: ImageSet) -> dict[str, Any]:
    """Pixel-identical images at the cached size (digests from the cache build): across splits, labels."""
    groups: dict[int, list[tuple[str, int]]] = {}
    for split in SPLITS:
        idx = getattr(data, split)
        for i, digest in zip(idx.tolist(), data.meta["digest"][idx.numpy()].tolist()):
            groups.setdefault(digest, []).append((split, int(data.labels[i])))
    dups = [g for g in groups.values() if len(g) > 1]
    return {
        "groups": len(dups),
        "extra_copies": sum(len(g) - 1 for g in dups),
        "across_splits": sum(1 for g in dups if "train" in {s for s, _ in g} and len({s for s, _ in g}) > 1),
        "conflicting_labels": sum(1 for g in dups if len({y for _, y in g}) > 1),
    }


def imbalance_finding(data: ImageSet, result: TrainResult | None) -> Finding | None:
    """Classes imbalanced beyond IMBALANCE_RATIO: what always answering the majority scores, and the
    baseline's recall of the rare class when it trained."""
    counts = data.class_counts("train")
    low, high = min(counts), max(counts)
    ratio = high / max(1, low)
    if ratio < IMBALANCE_RATIO:
        return None
    classes = data.classes
    majority, minority = classes[counts.index(high)], classes[counts.index(low)]
    val_counts = data.class_counts("val")
    majority_accuracy = max(val_counts) / max(1, sum(val_counts))
    summary = (f"classes are imbalanced {ratio:.1f}:1 ({majority} {high} vs {minority} {low} training images); "
               f"always answering {majority!r} already scores accuracy {majority_accuracy:.3f}")
    evidence: dict[str, Any] = {
        "train_counts": dict(zip(classes, counts)), "ratio": round(ratio, 3), "majority_class": majority,
        "minority_class": minority, "majority_class_accuracy": round(majority_accuracy, 4),
    }
    if result is not None:
        recall = dict(zip(classes, (round(r, 4) for r in result.val.per_class()[1])))
        summary += f" (baseline {result.val.accuracy:.3f}, recall of {minority!r} {recall[minority]:.3f})"
        evidence.update(baseline_accuracy=round(result.val.accuracy, 4), val_recall=recall)
    metric = (f"F1 / recall / precision of {minority!r} (average: binary, positive_class: {minority})"
              if len(classes) == 2 else "macro-averaged F1 (every class counts the same)")
    return Finding("imbalance", summary, evidence, [f"accuracy misleads here: judge by {metric}"], group="data")


def data_findings(facts: dict[str, Any]) -> list[Finding]:
    """Small classes, detail lost to the input size, far-from-square images, duplicates, corrupt files."""
    out: list[Finding] = []
    per_class = facts["train_per_class"]
    if min(per_class.values()) < FEW_IMAGES:
        out.append(Finding("small_data", small_classes(per_class),
                           {"train_per_class": per_class, "threshold": FEW_IMAGES},
                           ["augmentation", "a pretrained backbone", "more data"], "data"))
    sizes = facts["sizes"]
    used = sizes["baseline_input"]
    short = min(sizes["median"])
    if short >= 1.5 * used:
        kept = (used / short) ** 2
        out.append(Finding("input_size", f"images are {sizes['median'][0]}x{sizes['median'][1]} (median) but the "
                           f"baseline trained at {used}x{used}: it kept {kept:.0%} of the pixels",
                           {"median": sizes["median"], "baseline_input": used, "pixels_kept": round(kept, 4)},
                           [f"search input_size up to {size_ceiling(facts)}"], "data"))
    if sizes["share_not_square"] >= 0.2:
        out.append(Finding("aspect", f"{sizes['share_not_square']:.0%} of images are far from square "
                           f"(aspect > {OFF_SQUARE}); median aspect {sizes['median_aspect']:.2f}",
                           {"share_not_square": sizes["share_not_square"], "median_aspect": sizes["median_aspect"]},
                           ["aspect: pad (letterbox) vs stretch"], "data"))
    dup = facts["duplicates"]
    if dup["groups"]:
        out.append(Finding("duplicates", f"{dup['extra_copies']} duplicate image(s) in {dup['groups']} group(s); "
                           f"{dup['across_splits']} group(s) span train and validation/test, "
                           f"{dup['conflicting_labels']} with conflicting labels", dup,
                           ["remove duplicates: copies shared across splits inflate validation and test scores"],
                           "data"))
    if facts["unreadable"]:
        out.append(Finding("corrupt", facts.get("unreadable_summary") or
                           f"{facts['unreadable']} file(s) could not be decoded and were skipped",
                           {"unreadable": facts["unreadable"], "files": facts.get("unreadable_files", [])},
                           ["fix or delete them"], "data"))
    return out


def split_note(split_from: dict[str, str]) -> str:
    """``; validation and test from the dataset's own folders`` (or which one), else empty."""
    own = [("validation" if s == "val" else s) for s in ("val", "test") if split_from.get(s) == "folder"]
    return f"; {' and '.join(own)} from the dataset's own split" if own else ""


def small_classes(per_class: dict[str, int], named: int = 3) -> str:
    """The classes under FEW_IMAGES training images, smallest first, with their counts: every class
    that shares the smallest count is named (none is picked arbitrarily among equals)."""
    small = sorted((n, c) for c, n in per_class.items() if n < FEW_IMAGES)
    median = f"median {statistics.median(per_class.values()):g} per class; under {FEW_IMAGES} counts as small"
    if len(small) == len(per_class) and len({n for n, _ in small}) == 1:
        return f"only {small[0][0]} training images in each of the {len(small)} classes ({median})"
    fewest = small[0][0]
    tied = [c for n, c in small if n == fewest]
    shown = [f"{c!r} {n}" for n, c in small[:max(named, len(tied))]]
    more = f" and {len(small) - len(shown)} more" if len(small) > len(shown) else ""
    return f"few training images: {', '.join(shown)}{more} ({median})"
