"""How strict each look of an adaptive evaluation is: a Bonferroni split of the fixed-n test's error.

The fixed-n test calls a checkpoint's accuracy "clearly below" the best at ``z``
standard errors: under equal accuracies it is wrong with probability alpha =
P(Z > z) (one-sided; 2.3% at z 2). An adaptive evaluation (overmem.adaptive) looks at
a checkpoint after each step of a fixed schedule of row counts and may stop there,
and every look is one more chance of a wrong call. So each look before the last
tests at alpha / 200 (z 3.69 at the default z 2), and the look at the whole split
tests at what is left, alpha - (looks before it) x alpha / 200: by the union bound the
chance of a wrong "clearly below" over all looks is at most alpha, the fixed-n
test's. The early looks are strict on purpose: they only need to stop checkpoints far
below the best (the base's 0% against 99% stops after 32 rows), and the look at the
whole split keeps nearly all of alpha (z 2.013 after six looks, the schedule of 1,319
rows), so a checkpoint evaluated to the end gets nearly the verdict a full evaluation
gives it. (With alpha / 20 per look, z 3.05 early and 2.09-2.15 at the end, the demo's
borderline over-fitted checkpoints turned purple and moved the merge suggestion on 3 of
6 benchmark runs.) At most ``MAX_INTERIM`` looks come before the last.

Stopping because the difference is shown within the equivalence margin makes no
"clearly below" call (it calls the checkpoint high), so it tests at ``z`` at every look;
its cost is on the other side: a checkpoint a lucky look shows within the margin may
be a little more than the margin below, and is called high.
"""

from __future__ import annotations

import math
from statistics import NormalDist

INTERIM_SHARE = 1 / 200  # of alpha, spent by each look before the last
MAX_INTERIM = 10  # looks before the last: the last keeps at least half of alpha


def alpha(z: float) -> float:
    """One-sided error rate of a z test: P(Z > z)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def z_for(error: float) -> float:
    """The z whose one-sided error rate is ``error``."""
    return NormalDist().inv_cdf(1 - error)


def interim_z(z: float) -> float:
    """The z a look before the last tests at."""
    return z_for(alpha(z) * INTERIM_SHARE)


def final_z(z: float, looks: int) -> float:
    """The z of the look at the whole split when it is look number ``looks`` (1: the only one, z itself)."""
    spent = min(max(looks - 1, 0), MAX_INTERIM) * INTERIM_SHARE
    return z_for(alpha(z) * (1 - spent))


def look_z(z: float, looks: int | None, complete: bool) -> float:
    """The z an accuracy is judged at: ``z`` for a fixed-n evaluation (``looks`` None), else its look's."""
    if looks is None:
        return z
    return final_z(z, looks) if complete else interim_z(z)
