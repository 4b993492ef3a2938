"""How sure an accuracy measured on n images is: Wilson's 95% interval, stored and printed beside the figure.

On 150 images one image is 0.7 points and the 95% interval around 0.73 is about ±7 points, so
0.7255 printed alone cannot tell an improvement from luck. Wilson's score interval (E. B. Wilson,
JASA 22:209, 1927; Newcombe, Statistics in Medicine 17:857, 1998, method 3) stays inside [0, 1]
and is not empty at 0/n or n/n, where the textbook p ± z·sqrt(p(1-p)/n) is. Here, beside
metric_names, because run listings, training records, evaluation and the search reports all use
it; imports only metric_names, so `cnnlab runs` stays free of TensorFlow.
"""

import math
from statistics import NormalDist

from cnnlab.config.metric_names import is_accuracy_name

Z95 = NormalDist().inv_cdf(0.975)  # 1.95996...: two-sided 95%
# Printed figures carry their interval below this many images; stored ones always do. At 10,000 images
# the interval is at most ±1 point (at 0.5), the precision people read a printed accuracy to.
SHOWN_BELOW = 10_000


def wilson_interval(successes, n, z=Z95):
    """(low, high) of the score interval for `successes` out of `n` trials."""
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"an interval needs a positive whole number of trials; Received: n={n!r}")
    if isinstance(successes, bool) or not isinstance(successes, int) or not 0 <= successes <= n:
        raise ValueError(f"successes must be a whole number from 0 to n={n}; Received: successes={successes!r}")
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # the ends are exact at 0/n and n/n; clamping keeps rounding from putting them a hair outside [0, 1]
    return (0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == n else min(1.0, centre + half))


def correct_count(accuracy, n):
    """How many of `n` images an accuracy counts as right; None where it is no count over n.

    Keras' accuracies over a whole split are a mean of 0/1 per image, so accuracy·n is a whole
    number up to float32 rounding (under 1e-7 of n). A weighted or multi-label accuracy is not
    a count of images and gets no interval rather than a wrong one.
    """
    if not isinstance(n, int) or n <= 0 or not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy):
        return None
    exact = accuracy * n
    count = round(exact)
    return count if 0 <= count <= n and abs(exact - count) <= 1e-6 * n + 1e-3 else None


def accuracy_interval(accuracy, n):
    """{"n", "correct", "low", "high"}, the record metrics.json keeps beside an accuracy; None where it has none."""
    correct = correct_count(accuracy, n)
    if correct is None:
        return None
    low, high = wilson_interval(correct, n)
    return {"n": n, "correct": correct, "low": low, "high": high}


def intervals_of(scores, n, prefix=""):
    """{key: accuracy_interval} for the plain accuracies among `scores` (`val_accuracy`, `acc`, ...) measured on n images."""
    found = {}
    for key, value in (scores or {}).items():
        record = accuracy_interval(value, n) if is_accuracy_name(key, prefix) else None
        if record is not None:
            found[key] = record
    return found


def format_accuracy(accuracy, n=None, correct=None):
    """`0.727 (109/150, 95% CI 0.650–0.792)` under SHOWN_BELOW images, `0.9912 (9912/10000)` from there, `0.7267` with no count.

    `correct` defaults to the count `accuracy` is of n; evaluate passes its own count of argmax hits.
    """
    if correct is None and n is not None:
        correct = correct_count(accuracy, n)
    if correct is None:
        return f"{accuracy:.4f}"
    if n >= SHOWN_BELOW:
        return f"{accuracy:.4f} ({correct}/{n})"
    low, high = wilson_interval(correct, n)
    return f"{accuracy:.3f} ({correct}/{n}, 95% CI {low:.3f}–{high:.3f})"


def accuracy_cell(accuracy, n=None):
    """A table's cell: `0.727 (0.650–0.790, n=150)` under SHOWN_BELOW images, `0.7267` otherwise, `-` for none."""
    if accuracy is None:
        return "-"
    correct = correct_count(accuracy, n) if n is not None else None
    if correct is None or n >= SHOWN_BELOW:
        return f"{accuracy:.4f}"
    low, high = wilson_interval(correct, n)
    return f"{accuracy:.3f} ({low:.3f}–{high:.3f}, n={n})"
