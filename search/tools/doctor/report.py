"""The diagnosis as text for a terminal."""

from __future__ import annotations

from search.core.config import TrialConfig
from search.tools.doctor.data_facts import split_note
from search.tools.doctor.findings import Diagnosis
from search.tools.doctor.remedies import advised


def format_report(d: Diagnosis) -> str:
    """The diagnosis for a terminal: baseline, learning curves, findings with evidence, data facts."""
    f, b, cfg = d.facts, d.baseline, d.baseline["config"]
    baseline = TrialConfig.from_dict(cfg)
    lines = [
        f"doctor: {d.dataset.label}  ({f['n_images']} images, {len(d.classes)} classes; "
        f"train {f['splits']['train']} / validation {f['splits']['val']} / test {f['splits']['test']}"
        f"{split_note(f.get('split_from', {}))})",
        f"baseline: the recipe, {'residual ' if cfg['residual'] else ''}CNN depth {cfg['depth']} width {cfg['width']}, "
        f"{cfg['optimizer']} lr {cfg['lr']:g} wd {cfg['weight_decay']:g}, {cfg['schedule']}, batch {cfg['batch_size']}, "
        f"{cfg['epochs']} epochs, label smoothing {cfg['label_smoothing']:g}, EMA {cfg['ema_decay']:g}, "
        f"augment {cfg['augment']}, input {f['sizes']['baseline_input']} px, {cfg['color']}  ({b['seconds']:.1f}s"
        + (f", {b['epoch_seconds']:.2f}s per epoch)" if b.get("epoch_seconds") else ")"),
    ]
    if "history" in b:
        lines += ["", f"learning curves (objective: {d.objective.name} on validation)",
                  "  epoch  train_loss  val_loss  train_acc  val_acc  val_obj  grad_max"]
        for h in b["history"]:
            lines.append(f"  {h['epoch']:>5}  {h['train_loss']:>10.4f}  {h['val_loss']:>8.4f}  "
                         f"{h['train_accuracy']:>9.3f}  {h['val_accuracy']:>7.3f}  {h['value']:>7.3f}  "
                         f"{h['grad_norm_max']:>8.3g}")
        lines.append(f"  final (eval mode): training {d.objective.name} {b['train_value']:.3f}, "
                     f"validation {b['val_value']:.3f}")
    for group, title in (("training", "training findings"), ("data", "data findings")):
        found = [x for x in d.findings if x.group == group]
        lines += ["", title + ("" if found else ": none")]
        for x in found:
            lines.append(f"  [{x.kind}] {x.summary}")
            if x.remedies:
                lines.append(f"      try: {'; '.join(x.remedies)}")
            registered = [name for name, _ in advised([x.kind], baseline)]
            if registered:
                lines.append(f"      searched for it: {', '.join(registered)}")
    counts = ", ".join(f"{c} {n}" for c, n in f["train_per_class"].items())
    s = f["sizes"]
    lines += [
        "", "data facts",
        f"  training images per class: {counts}",
        f"  image sizes (w x h): min {s['min'][0]}x{s['min'][1]}, median {s['median'][0]}x{s['median'][1]}, "
        f"max {s['max'][0]}x{s['max'][1]}; median aspect {s['median_aspect']:.2f}, "
        f"{s['share_not_square']:.0%} far from square",
        f"  grayscale: {'yes' if f['grayscale'] else 'no'}; duplicates: {f['duplicates']['extra_copies']}; "
        f"unreadable files: {f['unreadable']}",
    ]
    return "\n".join(lines)
