"""Wilson's interval and the way accuracies carry it: known values, the ends, and what gets no interval."""

import math

import numpy as np
import pytest

from cnnlab.config.intervals import (SHOWN_BELOW, Z95, accuracy_cell, accuracy_interval, correct_count, format_accuracy,
                                     wilson_interval)

# Newcombe, Statistics in Medicine 17:857 (1998), Table I, method 3 (Wilson's score interval without continuity correction)
NEWCOMBE = [((81, 263), (0.2553, 0.3662)), ((15, 148), (0.0624, 0.1605)), ((0, 20), (0.0, 0.1611)),
            ((1, 29), (0.0061, 0.1718)), ((29, 29), (0.8830, 1.0))]


@pytest.mark.parametrize("counts, expected", NEWCOMBE)
def test_wilson_interval_matches_newcombes_published_values(counts, expected):
    low, high = wilson_interval(*counts)
    assert (round(low, 4), round(high, 4)) == expected


@pytest.mark.parametrize("successes, n", [(109, 150), (3, 7), (500, 1000), (1, 2)])
def test_wilson_interval_ends_are_where_the_score_test_stops_rejecting(successes, n):
    """The same interval from its definition: the p with (p̂ - p)² = z² p(1 - p) / n, roots of a quadratic."""
    p_hat, z2 = successes / n, Z95 ** 2
    roots = sorted(np.roots([1 + z2 / n, -(2 * p_hat + z2 / n), p_hat ** 2]).real)
    assert wilson_interval(successes, n) == pytest.approx(roots, abs=1e-12)


def test_wilson_interval_is_not_empty_at_none_or_all_right():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(Z95 ** 2 / (10 + Z95 ** 2)))
    assert wilson_interval(10, 10) == (pytest.approx(10 / (10 + Z95 ** 2)), 1.0)


@pytest.mark.parametrize("successes, n", [(0, 0), (1, -3), (3, 2.5), (-1, 5), (6, 5), (1.5, 5)])
def test_wilson_interval_refuses_what_is_no_count(successes, n):
    with pytest.raises(ValueError, match="Received"):
        wilson_interval(successes, n)


def test_correct_count_reads_a_float32_accuracy_back_as_images():
    assert correct_count(float(np.float32(109 / 150)), 150) == 109
    assert correct_count(float(np.float32(9912 / 10_000)), 10_000) == 9912


def test_an_accuracy_that_is_no_count_of_n_gets_no_interval():
    """A weighted accuracy, or one over another n, is not k/n for any k: no interval rather than a wrong one."""
    assert correct_count(0.7255, 150) is None
    assert accuracy_interval(0.7255, 150) is None
    assert accuracy_interval(0.5, 0) is None
    assert accuracy_interval(math.nan, 10) is None


def test_accuracy_interval_is_the_record_metrics_json_keeps():
    record = accuracy_interval(109 / 150, 150)
    assert record == {"n": 150, "correct": 109, "low": pytest.approx(0.6504, abs=1e-4), "high": pytest.approx(0.7917, abs=1e-4)}


def test_format_accuracy_gives_the_count_and_the_interval_on_few_images():
    assert format_accuracy(109 / 150, 150) == "0.727 (109/150, 95% CI 0.650–0.792)"
    assert format_accuracy(0.0, 20) == "0.000 (0/20, 95% CI 0.000–0.161)"


def test_format_accuracy_keeps_four_decimals_on_many_images_or_without_a_count():
    assert format_accuracy(9912 / SHOWN_BELOW, SHOWN_BELOW) == f"0.9912 (9912/{SHOWN_BELOW})"
    assert format_accuracy(0.7255, 150) == "0.7255"
    assert format_accuracy(0.7255) == "0.7255"


def test_accuracy_cell_is_short_for_tables():
    assert accuracy_cell(109 / 150, 150) == "0.727 (0.650–0.792, n=150)"
    assert accuracy_cell(0.7255, None) == "0.7255"
    assert accuracy_cell(None, 150) == "-"
