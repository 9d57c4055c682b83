"""Doctor: keeping conflicting remedies searchable vs fixing them, on a small, rotated/mirrored task.

The data (written to a folder, generated from a seed): 5 classes of asymmetric glyphs (L, T,
F, arrow, P-like), each image randomly rotated by 0-360 degrees, randomly mirrored, scaled and
moved, on noise, 32x32; 60 images per class, split 30 train / 24 validation / 6 test. The doctor
diagnoses it once (baseline: 3 epochs) and writes two spaces from the same diagnosis: with the
rule (conflicting findings keep augmentation, dropout and weight decay searchable) and without it
(the previous behavior: underfitting fixes them off). Both run the same budget (trials, epochs)
with the baseline enqueued first, over several seeds; the best validation accuracy is compared.

    python -m benchmarks.doctor_conflict [--seeds 2] [--trials 8] [--baseline-epochs 3]
"""

from __future__ import annotations

import logging
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine, median, parser, setup_threads, table, write_result

GLYPHS = {  # polygons on a unit square; none has a mirror or rotation symmetry
    "L": [(0.2, 0.1), (0.4, 0.1), (0.4, 0.7), (0.8, 0.7), (0.8, 0.9), (0.2, 0.9)],
    "T": [(0.1, 0.1), (0.9, 0.1), (0.9, 0.3), (0.6, 0.3), (0.6, 0.9), (0.4, 0.9), (0.4, 0.3), (0.1, 0.3)],
    "F": [(0.2, 0.1), (0.8, 0.1), (0.8, 0.3), (0.4, 0.3), (0.4, 0.45), (0.7, 0.45), (0.7, 0.6), (0.4, 0.6),
          (0.4, 0.9), (0.2, 0.9)],
    "arrow": [(0.1, 0.4), (0.6, 0.4), (0.6, 0.2), (0.9, 0.5), (0.6, 0.8), (0.6, 0.6), (0.1, 0.6)],
    "P": [(0.2, 0.1), (0.8, 0.1), (0.8, 0.5), (0.4, 0.5), (0.4, 0.9), (0.2, 0.9)],
}


def make_data(root: Path, per_class: int, seed: int) -> Path:
    """Write the rotated/mirrored glyph task as an ImageFolder under ``root``."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for k, (name, poly) in enumerate(GLYPHS.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            angle = rng.uniform(0, 2 * math.pi)
            mirror = rng.random() < 0.5
            scale = rng.uniform(0.6, 0.9) * 32
            cx, cy = 16 + rng.uniform(-3, 3), 16 + rng.uniform(-3, 3)
            pts = []
            for x, y in poly:
                x, y = x - 0.5, y - 0.5
                if mirror:
                    x = -x
                xr, yr = x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)
                pts.append((cx + xr * scale, cy + yr * scale))
            noise = np.random.default_rng(seed * 100_000 + k * 1000 + i)  # not hash(): salted per process
            bg = (noise.normal(110, 30, (32, 32, 3))).clip(0, 255).astype("uint8")
            img = Image.fromarray(bg)
            color = tuple(int(v) for v in noise.integers(150, 256, 3))
            ImageDraw.Draw(img).polygon(pts, fill=color)
            img.save(folder / f"{i:03d}.png")
    return root


def run_space(text: str, seed: int, trials: int, epochs: int | None = None) -> dict[str, Any]:
    import optuna
    import yaml

    from search.space.parse import parse_space
    from search.study.runner import run_trials
    from search.study.create import create_study

    doc = yaml.safe_load(text)
    doc.update(seed=seed, study=f"{doc['study']}-{seed}")
    doc["budget"]["n_trials"] = trials
    if epochs is not None:  # every trial of both spaces trains these epochs (the doctor fixes them)
        doc["budget"]["max_epochs"] = epochs
        doc["params"]["epochs"] = epochs
        doc["pruner"] = {**doc["pruner"], "min_resource": 1} if isinstance(doc["pruner"], dict) else doc["pruner"]
    space = parse_space(doc, source="doctor space")
    study = create_study(space, optuna.storages.InMemoryStorage())
    start = time.perf_counter()
    run_trials(study, space, device="cpu", worker_seed=seed)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = max(done, key=lambda t: t.value)
    return {"seed": seed, "best": best.value, "best_params": best.params,
            "epochs": sum(len(t.user_attrs.get("history", [])) for t in study.trials),
            "baseline_trial": study.trials[0].value, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--trial-epochs", type=int, default=None, help="epochs of every trial (default: the doctor's)")
    p.add_argument("--per-class", type=int, default=60, help="images per class (half of them train)")
    p.add_argument("--baseline-epochs", type=int, default=3, help="the doctor's baseline epochs (the space's "
                                                                  "epochs go up to 3x this when it underfits)")
    args = p.parse_args(argv)
    setup_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    import optuna

    from search.tools.doctor import conflicting, diagnose, recommend_space
    from search.space.parse import DatasetSpec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seeds, trials = (1, 3) if args.tiny else (args.seeds, args.trials)
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp) / "glyphs", 20 if args.tiny else args.per_class, seed=0)
        spec = DatasetSpec(path=str(data), val_fraction=0.4, test_fraction=0.1)
        d = diagnose(spec, epochs=2 if args.tiny else args.baseline_epochs, device="cpu", probe_color=False)
        against, favor = conflicting(d)
        print("findings:", ", ".join(f.kind for f in d.findings), f"(baseline validation {d.baseline['val_value']:.3f})")
        arms = {"keep both (rule)": recommend_space(d, "glyphs-rule", trials),
                "fixed (no rule)": recommend_space(d, "glyphs-fixed", trials, keep_conflicting=False)}
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for s in range(args.first_seed, args.first_seed + seeds):
            for arm, text in arms.items():
                runs[arm].append(run_space(text, s, trials, 2 if args.tiny else args.trial_epochs))
                r = runs[arm][-1]
                print(f"{arm} seed {s}: best {r['best']:.3f} ({r['best_params'].get('augment', 'none (fixed)')}), "
                      f"{r['epochs']} epochs, {r['seconds']:.0f}s", flush=True)
    rows = [(arm, ", ".join(f"{r['best']:.3f}" for r in rs), median(r["best"] for r in rs),
             median(r["epochs"] for r in rs), ", ".join(str(r["best_params"].get("augment", "none (fixed)"))
                                                        for r in rs))
            for arm, rs in runs.items()]
    print(table(["space", "best validation accuracy per seed", "median", "median epochs", "augment of the best"],
                rows))
    name = "doctor_conflict" if args.first_seed == 0 else f"doctor_conflict-seeds{args.first_seed}"
    path = write_result(args.out, name, info, {
        "findings": [f.kind for f in d.findings], "conflict": bool(against), "baseline": d.baseline.get("val_value"),
        "trials": trials, "seeds": seeds, "spaces": arms, "runs": runs}, args.tiny)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
