"""The hand-written metric types and text exposition format (agent/core/prometheus_text.py):
label values and HELP escaped, labels sorted by name with `le` among them, histogram
buckets cumulative up to +Inf, values written as Go writes floats, counters as _total;
and, for the same metrics, the very text prometheus_client wrote (what scrapers saw)."""

from __future__ import annotations

import math
import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Gauge as ClientGauge
from prometheus_client import Histogram as ClientHistogram
from prometheus_client.parser import text_string_to_metric_families

from agent.core.prometheus_text import (
    CONTENT_TYPE,
    Family,
    Gauge,
    Histogram,
    Sample,
    format_value,
    render,
)


def text_of(*metrics: Gauge | Histogram) -> str:
    return render(f for m in metrics for f in m.collect()).decode()


def lines_of(*metrics: Gauge | Histogram) -> list[str]:
    return text_of(*metrics).splitlines()


@pytest.mark.parametrize(("value", "text"), [
    (0, "0.0"), (1, "1.0"), (2.5, "2.5"), (0.001, "0.001"), (600, "600.0"), (-3, "-3.0"),
    (123456.0, "123456.0"), (1e6, "1e+06"), (1234567.5, "1.2345675e+06"),
    (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
])
def test_values_are_written_as_go_writes_floats(value, text):
    assert format_value(value) == text


def test_label_values_escape_backslash_double_quote_and_newline():
    gauge = Gauge("g", "h", ["route"])
    tricky = 'a\\b"c\nd'
    gauge.labels(tricky).set(1)
    assert r'g{route="a\\b\"c\nd"} 1.0' in lines_of(gauge)
    [family] = text_string_to_metric_families(text_of(gauge))
    assert family.samples[0].labels == {"route": tricky}  # and it reads back as it was


def test_help_escapes_backslash_and_newline_but_not_double_quotes():
    gauge = Gauge("g", 'one\\two\nthree "four"')
    assert lines_of(gauge)[:2] == [r'# HELP g one\\two\nthree "four"', "# TYPE g gauge"]


def test_labels_are_sorted_by_name_whatever_order_they_were_declared_in():
    gauge = Gauge("g", "h", ["zone", "app", "method"])
    gauge.labels("z1", "web", "GET").set(2)
    assert lines_of(gauge)[2] == 'g{app="web",method="GET",zone="z1"} 2.0'


def test_histogram_buckets_are_cumulative_up_to_inf_with_count_and_sum():
    hist = Histogram("h_seconds", "Time", buckets=(1, 0.5, 5))  # sorted whatever the order
    for v in (0.2, 0.5, 0.7, 5, 9):  # a value on a bound counts in that bound's bucket (le)
        hist.observe(v)
    assert lines_of(hist)[2:8] == [
        'h_seconds_bucket{le="0.5"} 2.0',
        'h_seconds_bucket{le="1.0"} 3.0',
        'h_seconds_bucket{le="5.0"} 4.0',
        'h_seconds_bucket{le="+Inf"} 5.0',
        "h_seconds_count 5.0",
        "h_seconds_sum 15.4",
    ]


def test_a_histograms_le_sorts_among_its_labels_and_each_series_has_its_own_buckets():
    hist = Histogram("h", "x", ["outcome", "kind"], buckets=(1,))
    hist.labels("failed", "create").observe(3)
    hist.labels("ok", "delete").observe(0.5)
    assert lines_of(hist)[2:10] == [
        'h_bucket{kind="create",le="1.0",outcome="failed"} 0.0',
        'h_bucket{kind="create",le="+Inf",outcome="failed"} 1.0',
        'h_count{kind="create",outcome="failed"} 1.0',
        'h_sum{kind="create",outcome="failed"} 3.0',
        'h_bucket{kind="delete",le="1.0",outcome="ok"} 1.0',
        'h_bucket{kind="delete",le="+Inf",outcome="ok"} 1.0',
        'h_count{kind="delete",outcome="ok"} 1.0',
        'h_sum{kind="delete",outcome="ok"} 0.5',
    ]


def test_a_histogram_is_followed_by_the_creation_time_of_each_series_as_a_gauge():
    hist = Histogram("h", "x", ["kind"], buckets=(1,))
    assert lines_of(hist) == ["# HELP h x", "# TYPE h histogram"]  # no series, no _created
    hist.labels("a").observe(1)
    created = lines_of(hist)[-3:]
    assert created[:2] == ["# HELP h_created x", "# TYPE h_created gauge"]
    assert re.fullmatch(r'h_created\{kind="a"\} 1\.\d+e\+09', created[2])


def test_a_counter_family_is_named_and_typed_with_total():
    family = Family("writes", "Writes", "counter", [Sample("_total", (), 7)])
    assert render([family]).decode() == ("# HELP writes_total Writes\n"
                                         "# TYPE writes_total counter\nwrites_total 7.0\n")


def test_a_labelless_metric_shows_zero_from_the_start_and_a_labelled_one_no_series():
    assert lines_of(Gauge("up", "h")) == ["# HELP up h", "# TYPE up gauge", "up 0.0"]
    assert lines_of(Gauge("q", "h", ["kind"])) == ["# HELP q h", "# TYPE q gauge"]


def test_gauges_go_up_and_down_per_series():
    gauge = Gauge("g", "h", ["kind"])
    gauge.labels("a").inc()
    gauge.labels("a").inc()
    gauge.labels("a").dec()
    gauge.labels("b").set(4)
    assert lines_of(gauge)[2:] == ['g{kind="a"} 1.0', 'g{kind="b"} 4.0']


def test_labels_must_match_the_declared_names_in_number():
    with pytest.raises(ValueError, match="takes labels"):
        Gauge("g", "h", ["kind"]).labels("a", "b")
    with pytest.raises(ValueError, match="takes labels"):
        Histogram("h", "x", ["kind"], buckets=(1,)).observe(1)  # a series needs its label


def test_the_content_type_is_the_text_format_0_0_4():
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


def _mask_created(text: str) -> str:
    return re.sub(r"^(\S+_created(\{.*\})?) \S+$", r"\1 T", text, flags=re.MULTILINE)


def test_the_text_is_the_one_prometheus_client_wrote_for_the_same_metrics():
    """What scrapers saw before the agent dropped prometheus_client (the test extra keeps
    it, as an independent writer): the same lines, creation times aside."""
    registry = CollectorRegistry()
    theirs = (ClientGauge("g_jobs", 'Jobs\\ "now"\nrunning', ["kind"], registry=registry),
              ClientGauge("g_up", "Up", registry=registry),
              ClientHistogram("h_req", "Requests", ["method", "route"], buckets=(0.01, 1, 2.5, 1e6),
                              registry=registry),
              ClientHistogram("h_lag", "Lag", buckets=(0.001, 10), registry=registry))
    ours = (Gauge("g_jobs", 'Jobs\\ "now"\nrunning', ["kind"]), Gauge("g_up", "Up"),
            Histogram("h_req", "Requests", ["method", "route"], buckets=(0.01, 1, 2.5, 1e6)),
            Histogram("h_lag", "Lag", buckets=(0.001, 10)))
    for jobs, up, req, lag in (theirs, ours):
        jobs.labels("create").inc()
        jobs.labels('we"ird\\\n').set(3)
        up.set(1)
        req.labels("GET", "/v2.1/servers/{server_id}").observe(0.5)
        req.labels("GET", "/v2.1/servers/{server_id}").observe(2.5)
        req.labels("POST", 'a"b').observe(3e6)
        lag.observe(0.0005)
    expected = _mask_created(generate_latest(registry).decode())
    assert _mask_created(text_of(*ours)) == expected
    assert "h_lag_created" in expected  # the masking left the lines there to compare
