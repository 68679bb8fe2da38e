"""The few Prometheus metric types the agent uses (gauges and histograms with labels, and
families built at scrape time) and the text exposition format 0.0.4 they are served in.

Written here instead of importing prometheus_client, which costs the idle daemon 1.3 MiB
of RSS and RssAnon (it imports its HTTP server, wsgiref, urllib.request and gzip; issue
15). The output is the one prometheus_client's generate_latest wrote for the same metrics,
line for line: labels sorted by name, `le` among them; every value as a float ("1.0",
"+Inf"); a counter named and typed with `_total`; and, after a histogram's samples, a
`<name>_created` gauge with each series' creation time.

Updates take a lock per metric: today they all happen on the event loop thread, but a
histogram's update touches a bucket, the sum and the count, and a scrape or an update from
a worker thread must never see half of one."""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]  # (name, value) pairs


@dataclass(frozen=True)
class Sample:
    suffix: str  # after the family's name: "", "_bucket", "_sum", "_count", "_total"...
    labels: Labels
    value: float


@dataclass(frozen=True)
class Family:
    """One metric as a scrape shows it."""
    name: str
    help: str
    type: str  # "gauge", "counter" or "histogram"
    samples: list[Sample] = field(default_factory=list)


class Collector(Protocol):
    def collect(self) -> Iterable[Family]: ...


def format_value(value: float) -> str:
    """A value as Go (and so Prometheus, and prometheus_client) writes it: "1.0", "0.25",
    "+Inf", "1e+06" (Go switches to exponents for 7 integer digits and more)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(float(value))
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _sample_line(name: str, sample: Sample) -> str:
    labels = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(sample.labels))
    braces = f"{{{labels}}}" if labels else ""
    return f"{name}{sample.suffix}{braces} {format_value(sample.value)}\n"


def render(families: Iterable[Family]) -> bytes:
    """The text exposition format of these families, in their order."""
    out: list[str] = []
    for family in families:
        # A counter's samples are name_total, and so are its HELP and TYPE lines.
        shown = family.name + "_total" if family.type == "counter" else family.name
        out.append(f"# HELP {shown} {escape_help(family.help)}\n# TYPE {shown} {family.type}\n")
        out.extend(_sample_line(family.name, s) for s in family.samples)
    return "".join(out).encode()


class _Child:
    """One series of a metric: its values for one set of label values."""

    created: float | None = None  # a histogram's creation time, shown as <name>_created

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock  # its metric's

    def samples(self, labels: Labels) -> list[Sample]:
        raise NotImplementedError


ChildT = TypeVar("ChildT", bound=_Child)


class _Metric(Generic[ChildT]):
    """A metric with its label names and one series (a child) per label values."""

    type = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.help, self.labelnames = name, help, tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], ChildT] = {}
        if not self.labelnames:  # a metric without labels is one series, there from the start
            self.labels()

    def labels(self, *values: str) -> ChildT:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self._new_child()
            return child

    def _new_child(self) -> ChildT:
        raise NotImplementedError

    def collect(self) -> list[Family]:
        family = Family(self.name, self.help, self.type)
        created = Family(self.name + "_created", self.help, "gauge")
        with self._lock:
            for values, child in self._children.items():
                labels = tuple(zip(self.labelnames, values, strict=True))
                family.samples.extend(child.samples(labels))
                if child.created is not None:
                    created.samples.append(Sample("", labels, child.created))
        return [family, created] if created.samples else [family]


class _GaugeChild(_Child):
    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self.value = 0.0

    def set(self, value: float) -> None:
        with self._lock:
            self.value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)

    def samples(self, labels: Labels) -> list[Sample]:
        return [Sample("", labels, self.value)]


class Gauge(_Metric[_GaugeChild]):
    type = "gauge"

    def _new_child(self) -> _GaugeChild:
        return _GaugeChild(self._lock)

    def set(self, value: float) -> None:
        self.labels().set(value)


class _HistogramChild(_Child):
    def __init__(self, lock: threading.Lock, bounds: tuple[float, ...]) -> None:
        super().__init__(lock)
        self.bounds = bounds  # ascending, +Inf last
        self.counts = [0] * len(bounds)  # per bucket, not cumulative: added up when shown
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        # A value counts in the first bucket whose bound is >= it (le: less or equal).
        bucket = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self.counts[bucket] += 1
            self.sum += value

    def samples(self, labels: Labels) -> list[Sample]:
        out, total = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            total += n
            out.append(Sample("_bucket", (*labels, ("le", format_value(bound))), total))
        return [*out, Sample("_count", labels, total), Sample("_sum", labels, self.sum)]


class Histogram(_Metric[_HistogramChild]):
    type = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float]) -> None:
        self.bounds = (*sorted(float(b) for b in buckets if b != math.inf), math.inf)
        super().__init__(name, help, labelnames)

    def _new_child(self) -> _HistogramChild:
        return _HistogramChild(self._lock, self.bounds)

    def observe(self, value: float) -> None:
        self.labels().observe(value)
