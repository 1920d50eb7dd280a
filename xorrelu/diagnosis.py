"""Why a replica did not solve XOR: one cause per unsolved replica, from its logged metrics.

Criteria, taken in this order (the first that holds wins):

- diverged: its cost became NaN or inf.
- dead: at the end, some hidden layer has every unit stuck (stuck_frac = 1): the output no
  longer depends on the input there. A net dead at initialization has 0/0 gradient ratios:
  that is dead, not vanished.
- vanished: at step 0 the gradient reaching layer 1 is orders of magnitude below the output
  layer's (grad_norm_1 / grad_norm_L < 1e-4), and the cost never got below ln 2 (by more than
  1e-3): the net never learned more than the constant output h = 1/2.
- plateau: the final cost sits on a collapsed-network value, within 2e-3 of ln 2 = 0.693
  (all four points merged), 0.477 (three merged) or 0.347 (two pairs merged), while its units
  still move.
- slow: the cost is still falling: the final cost is more than 1% below the cost at 90% of the
  run's steps (more steps would likely solve it).
- other: none of the above.
"""

from __future__ import annotations

import math

import torch

CAUSES = ["diverged", "dead", "vanished", "plateau", "slow", "other"]
PLATEAU_COSTS = (
    math.log(2),
    0.75 * -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)),
    math.log(2) / 2,
)
VANISHED_RATIO = 1e-4
LN2_BAND = 1e-3
PLATEAU_BAND = 2e-3
SLOW_DROP = 0.01
SLOW_AT = 0.9  # "still falling" compares the end with this fraction of the run


def diagnose(
    solved: torch.Tensor,  # [replicas] bool
    diverged: torch.Tensor,  # [replicas] bool
    final_cost: torch.Tensor,  # [replicas]
    final_stuck: torch.Tensor,  # [replicas, hidden layers]
    first_ratio: torch.Tensor,  # [replicas] grad_norm_1 / grad_norm_L at step 0 (NaN for 0/0)
    below_ln2: torch.Tensor,  # [replicas] bool: the cost was ever below ln 2 - 1e-3
    cost_at_90: torch.Tensor,  # [replicas] the cost at 90% of the run
) -> list[str | None]:
    """The cause for each replica, None for the solved ones."""
    dead = (final_stuck >= 1).any(dim=1)
    vanished = (first_ratio < VANISHED_RATIO) & ~below_ln2
    plateau = torch.stack([(final_cost - c).abs() < PLATEAU_BAND for c in PLATEAU_COSTS]).any(dim=0)
    slow = final_cost < (1 - SLOW_DROP) * cost_at_90
    causes = []
    for r in range(len(solved)):
        if solved[r]:
            causes.append(None)
            continue
        flags = [diverged[r], dead[r], vanished[r], plateau[r], slow[r], True]
        causes.append(CAUSES[[bool(f) for f in flags].index(True)])
    return causes
