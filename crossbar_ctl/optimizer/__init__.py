"""The exact subset-sum optimizer that picks each cell's switches (numba kernels)."""

from crossbar_ctl.optimizer._solver import (
    MAX_BRANCHES,
    MAX_EXACT_BRANCHES,
    SubsetSumResult,
    SubsetSumStatus,
    solve_subset_sum,
)

__all__ = ["MAX_BRANCHES", "MAX_EXACT_BRANCHES", "SubsetSumResult", "SubsetSumStatus",
           "solve_subset_sum"]
