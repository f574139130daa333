"""A strict parser of the Prometheus text exposition format 0.0.4 (own implementation).

parse(text) -> dict family name -> Family(type, help, samples); raises ValueError with
the line number on any violation:
- HELP/TYPE syntax, at most one of each per family, TYPE before the family's samples;
- metric and label names, quoted label values with only \\\\, \\" and \\n escapes,
  no duplicate label names, values (floats, NaN, +Inf, -Inf), optional int timestamp;
- a family's samples are contiguous; no duplicate series;
- counters are >= 0; histograms: _bucket with le, le strictly ascending, a +Inf bucket,
  cumulative (non-decreasing) counts, _count equal to the +Inf bucket, _sum present.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


@dataclass
class Sample:
    name: str
    labels: dict
    value: float
    line: int


@dataclass
class Family:
    name: str
    type: str = "untyped"
    help: str | None = None
    samples: list = field(default_factory=list)
    typed_explicitly: bool = False


def _value(s: str, ln: int) -> float:
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s):
        raise ValueError(f"line {ln}: bad value {s!r}")
    return float(s)


def _parse_labels(s: str, i: int, ln: int) -> tuple[dict, int]:
    """s[i] == '{'; returns (labels, index after '}')."""
    labels: dict = {}
    i += 1
    while True:
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        m = LABEL.match(s, i)
        if not m:
            raise ValueError(f"line {ln}: bad label name at {s[i:i+20]!r}")
        name = m.group(0)
        if name in labels:
            raise ValueError(f"line {ln}: duplicate label {name}")
        i = m.end()
        if s[i:i + 2] != '="':
            raise ValueError(f"line {ln}: expected =\" after label {name}")
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise ValueError(f"line {ln}: unterminated label value")
            ch = s[i]
            if ch == "\\":
                nx = s[i + 1:i + 2]
                if nx == "\\":
                    val.append("\\")
                elif nx == '"':
                    val.append('"')
                elif nx == "n":
                    val.append("\n")
                else:
                    raise ValueError(f"line {ln}: bad escape \\{nx} in label value")
                i += 2
            elif ch == '"':
                i += 1
                break
            elif ch == "\n":
                raise ValueError(f"line {ln}: newline in label value")
            else:
                val.append(ch)
                i += 1
        labels[name] = "".join(val)
        if i < len(s) and s[i] == ",":
            i += 1
            continue
        if i < len(s) and s[i] == "}":
            return labels, i + 1
        raise ValueError(f"line {ln}: expected , or }} after label {name}")


def _family_of(sample_name: str, families: dict) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if sample_name.endswith(suffix):
            base = sample_name[: -len(suffix)]
            f = families.get(base)
            if f is not None and f.type in ("histogram", "summary"):
                if suffix == "_bucket" and f.type != "histogram":
                    break
                return base
    return sample_name


def parse(text: str) -> dict:
    if text and not text.endswith("\n"):
        raise ValueError("exposition must end with a newline")
    families: dict[str, Family] = {}
    finished: set = set()     # families whose sample block has ended
    current: str | None = None
    seen_series: set = set()
    for ln, line in enumerate(text.split("\n")[:-1] if text else [], start=1):
        if line.strip() == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0] == "#" and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.fullmatch(name):
                    raise ValueError(f"line {ln}: bad metric name {name!r}")
                f = families.setdefault(name, Family(name))
                if name in finished or (f.samples and current != name):
                    raise ValueError(f"line {ln}: {parts[1]} for {name} after its samples")
                if parts[1] == "HELP":
                    if f.help is not None:
                        raise ValueError(f"line {ln}: second HELP for {name}")
                    doc = parts[3] if len(parts) > 3 else ""
                    if re.search(r"\\[^\\n]", doc.replace("\\\\", "")):
                        raise ValueError(f"line {ln}: bad escape in HELP")
                    f.help = doc
                else:
                    if f.typed_explicitly:
                        raise ValueError(f"line {ln}: second TYPE for {name}")
                    if f.samples:
                        raise ValueError(f"line {ln}: TYPE after samples of {name}")
                    if len(parts) != 4 or parts[3] not in TYPES:
                        raise ValueError(f"line {ln}: bad TYPE line {line!r}")
                    f.type = parts[3]
                    f.typed_explicitly = True
                if current is not None and current != name:
                    finished.add(current)
                current = name
            continue  # other comments are allowed
        m = NAME.match(line)
        if not m:
            raise ValueError(f"line {ln}: bad sample name in {line!r}")
        sname = m.group(0)
        i = m.end()
        labels: dict = {}
        if i < len(line) and line[i] == "{":
            labels, i = _parse_labels(line, i, ln)
        if i >= len(line) or line[i] != " ":
            raise ValueError(f"line {ln}: expected a space before the value in {line!r}")
        rest = line[i + 1:].split(" ")
        if len(rest) not in (1, 2) or rest[0] == "":
            raise ValueError(f"line {ln}: bad value/timestamp in {line!r}")
        value = _value(rest[0], ln)
        if len(rest) == 2 and not re.fullmatch(r"-?\d+", rest[1]):
            raise ValueError(f"line {ln}: bad timestamp {rest[1]!r}")
        fam_name = _family_of(sname, families)
        f = families.setdefault(fam_name, Family(fam_name))
        if fam_name in finished:
            raise ValueError(f"line {ln}: samples of {fam_name} are not contiguous")
        if current is not None and current != fam_name:
            finished.add(current)
        current = fam_name
        key = (sname, tuple(sorted(labels.items())))
        if key in seen_series:
            raise ValueError(f"line {ln}: duplicate series {key}")
        seen_series.add(key)
        if f.type == "histogram" and sname == fam_name:
            raise ValueError(f"line {ln}: histogram sample without _bucket/_sum/_count")
        if f.type == "counter" and not (value >= 0):
            raise ValueError(f"line {ln}: negative or NaN counter {line!r}")
        f.samples.append(Sample(sname, labels, value, ln))
    for f in families.values():
        if f.type == "histogram":
            _check_histogram(f)
    return families


def _check_histogram(f: Family) -> None:
    groups: dict = {}
    for s in f.samples:
        other = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        g = groups.setdefault(other, {"buckets": [], "sum": None, "count": None})
        if s.name == f.name + "_bucket":
            if "le" not in s.labels:
                raise ValueError(f"line {s.line}: bucket without le")
            g["buckets"].append((_value(s.labels["le"], s.line), s.value, s.line))
        elif s.name == f.name + "_sum":
            g["sum"] = s.value
        elif s.name == f.name + "_count":
            if "le" in s.labels:
                raise ValueError(f"line {s.line}: le on _count")
            g["count"] = s.value
    for labels, g in groups.items():
        b = g["buckets"]
        if not b:
            raise ValueError(f"{f.name}{dict(labels)}: no buckets")
        les = [x[0] for x in b]
        if any(not (les[i] < les[i + 1]) for i in range(len(les) - 1)):
            raise ValueError(f"{f.name}{dict(labels)}: le not strictly ascending: {les}")
        if les[-1] != math.inf:
            raise ValueError(f"{f.name}{dict(labels)}: no +Inf bucket")
        counts = [x[1] for x in b]
        if any(counts[i] > counts[i + 1] for i in range(len(counts) - 1)) or counts[0] < 0:
            raise ValueError(f"{f.name}{dict(labels)}: buckets not cumulative: {counts}")
        if g["count"] is None or g["sum"] is None:
            raise ValueError(f"{f.name}{dict(labels)}: _sum or _count missing")
        if g["count"] != counts[-1]:
            raise ValueError(f"{f.name}{dict(labels)}: _count {g['count']} != +Inf bucket {counts[-1]}")
