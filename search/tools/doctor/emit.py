"""Write a plain YAML document with comments: on a key's line, above a key, and on each entry of a
block mapping (one entry per line, values in flow style), which ``yaml.safe_dump`` cannot do."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import yaml


def dump_commented(doc: Mapping[str, Any], *, header: Sequence[str] = (), comments: Mapping[str, str] = {},
                   above: Mapping[str, Sequence[str]] = {}, blocks: Mapping[str, Mapping[str, str]] = {},
                   block_notes: Mapping[str, Sequence[str]] = {}, nested: Sequence[str] = ()) -> str:
    """``doc`` as YAML text, one top-level key per line.

    ``header``: comment lines at the top; ``comments``: a key's end-of-line comment; ``above``:
    comment lines before a key; ``blocks``: keys written as a block mapping, mapping each entry to
    its end-of-line comment; ``block_notes``: comment lines closing such a block; ``nested``: keys
    written in block style (lists of plain values on one line): a record, not a setting. The text is read
    back and must equal ``doc``, so a quoting bug here never reaches a user.
    """
    lines = [f"# {line}" for line in header]
    for key, value in doc.items():
        lines += [f"# {line}" for line in above.get(key, ())]
        if key in blocks:
            lines.append(f"{key}:")
            lines += [_line(f"  {name}: {flow(v)}", blocks[key].get(name)) for name, v in value.items()]
            lines += [f"  # {line}" for line in block_notes.get(key, ())]
        elif key in nested:
            lines.append(_line(f"{key}:", comments.get(key)))
            body = yaml.dump(value, Dumper=_RecordDumper, default_flow_style=False, sort_keys=False, width=10**6,
                             allow_unicode=True)
            lines += [f"  {line}" for line in body.rstrip("\n").split("\n")]
        else:
            lines.append(_line(f"{key}: {flow(value)}", comments.get(key)))
    text = "\n".join(lines) + "\n"
    if yaml.safe_load(text) != dict(doc):
        raise RuntimeError(f"commented YAML does not read back as written:\n{text}")
    return text


def flow(value: Any) -> str:
    """One value in YAML flow style, on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _line(text: str, comment: str | None) -> str:
    return f"{text}  # {' '.join(comment.split())}" if comment else text


class _RecordDumper(yaml.SafeDumper):
    """Block style, except that a list of plain values (a confusion-matrix row) stays on one line."""


def _sequence(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flat = all(not isinstance(x, (list, tuple, dict)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_RecordDumper.add_representer(list, _sequence)
