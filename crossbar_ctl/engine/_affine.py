"""In-loop affine correction: each output channel's gain and offset, measured after programming.

A programmed tile's pair output ``y = I[2o] - I[2o + 1]`` (or the board's difference channel,
``mvm_pairs``) should be ``V @ target[:, o]``. The readout adds what programming could not see
through per-cell unit-vector probes: a difference channel's own gain and offset, channel offsets
seen at a whole vector's scale, the aggregate of the pair's weight errors along its weights.
:func:`measure_affine` drives ``vectors`` seeded reference vectors (entries uniform on [0, 1],
scaled to row voltages as ``check`` scales inputs) through every programmed tile, fits per output

    y = gain * (V @ target) + offset_a

by least squares (against the closed loop's measured transfer instead of ``target`` when the plan
carries a residual plan, :func:`expected_s`), and stores ``gain`` and ``offset_a`` in the plan
(``tile{t}.affine_gain``, ``tile{t}.affine_offset_a``, the header's :class:`AffineRecord`). ``check`` applies
``(y - offset_a) / gain`` (:func:`correct_pairs`). A tile whose reference outputs do not vary
(one driven row: every vector scales to the same voltage) gets an offset only.

Each tile is read at its own ADC range (``ranged``, ``tile{t}.adc_range_a``): the smallest full
scale that holds every column current ``check``'s scaling allows (:func:`tile_range_a`). Where the
total-current limit, not the column limit, bounds the row voltages (many rows driven at once),
the columns use a fraction of the ADC's range, and its noise floor and steps, which scale with the
range, weigh on a small signal; the correction is measured at that range, since a channel's offset
scales with it too, and ``check`` reads at it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from crossbar_ctl.core.config import StrictModel
from crossbar_ctl.core.errors import EngineError
from crossbar_ctl.engine._mapping import Tile, pair_transfer, row_voltages
from crossbar_ctl.engine._twin import sensed_a

if TYPE_CHECKING:
    from calibration import TwinParameters
    from drivers import Lab
    from crossbar_ctl.engine._plan import SwitchPlan

__all__ = [
    "AFFINE_VERSION", "RANGE_HEADROOM", "AffineRecord", "adc_range", "correct_pairs", "declared_bound", "expected_s",
    "fit_affine", "reads_differences",
    "measure_affine", "reference_inputs", "reference_voltages", "tile_pairs", "tile_range", "tile_range_a", "validate_affine",
]

AFFINE_VERSION = 1


class AffineRecord(StrictModel):
    """How a plan's affine correction was measured (the arrays are per tile in the plan)."""

    version: Literal[1] = AFFINE_VERSION
    """Format of the correction; a plan with another is refused with what to do."""
    vectors: int = Field(ge=2)
    """Reference vectors per tile."""
    readings: int = Field(ge=0)
    """Readout vectors (``mvm`` calls' rows) the measurement took, all tiles."""
    switch_writes: int = Field(0, ge=0)
    """Branch switches the measurement's loads changed (the boards' drivers count them)."""
    differential: bool
    """Measured (and to be applied) on the board's difference channels."""
    seed: int
    ranged: bool = False
    """Each tile measured (and to be read) at its own ADC range, ``tile{t}.adc_range_a``."""
    measured_bound: bool = False
    """Row voltages scaled (as ``check`` will scale them) to the total-current bound of the cells'
    calibrated conductance, checked by measurement (:func:`declared_bound`); else to closed branches
    over the smallest resistance."""
    gain_rms_deviation: float
    """rms of ``gain - 1`` over every output."""
    offset_rms_a: float
    """rms of the offsets, amperes."""


_BATCH = 64  # input vectors per readout call
RANGE_HEADROOM = 1.25
"""A tile's ADC range over its column-current bound (the bound is computed on the plan's predicted
cell conductances; the true ones differ by their calibration error and drift)."""


@contextmanager
def declared_bound(lab: Lab, plan: SwitchPlan, t: int, *, enabled: bool = True) -> Iterator[int]:
    """Within it, the drivers bound the total current by the calibrated conductance of the cells
    of tile ``t``'s step (loaded), and ``row_voltages`` scales to it (``SwitchBoard.
    declare_cell_conductance_s``: one reading per row with a closed branch, once per loaded
    configuration); after it, closed branches over the smallest resistance again, so that other
    readings scale as they always did. Yields the readings the check took (0: not ``enabled``, or
    a board that cannot)."""
    board = lab.board
    if not enabled or not hasattr(board, "declare_cell_conductance_s"):
        yield 0
        return
    tile = plan.header.tiles[t].tile
    cell = np.zeros(board.geometry()[:2])
    for u, record in enumerate(plan.header.tiles):
        if (record.tile.board, record.tile.step) == (tile.board, tile.step):
            cell[record.tile.block] = plan.tile(u, "cell_s")
    before = board.bound_readings
    board.declare_cell_conductance_s(cell)
    try:
        yield board.bound_readings - before
    finally:
        board.release_declared()


def tile_range_a(lab: Lab, plan: SwitchPlan, t: int, limits: dict[str, float], *, differential: bool = False,
                 margin: float = 0.9) -> float | None:
    """The ADC range for tile ``t`` (its step loaded), A, or None: the board's range as it is.

    ``row_voltages`` (``check``'s scaling, the same ``margin``) keeps each column's current within
    ``margin * max_current_a`` and the rows' total ``|V| @ b`` (``b`` the drivers' row bound)
    within ``margin * max_total_current_a``, so for any input ``|I_j| <= margin * max_total_current_a
    * max_i G_ij / b_i``. Read through the difference channels (``differential``), what the ADC
    converts is each pair's difference, so ``G_ij`` is the pair's ``|G+ - G-|``: the common mode
    reaches neither the channel's converter nor its range (docs/switchboard-protocol.md). The
    range is the largest output's bound times :data:`RANGE_HEADROOM`; None when that is not below
    the board's range, or the readout has no settable range.
    """
    from crossbar_ctl.engine._program import row_bound

    board = getattr(lab.readout, "board", None)
    if board is None or not hasattr(board, "set_adc_range_a"):
        return None
    rows = plan.header.tiles[t].tile.block[0]
    cell = plan.tile(t, "cell_s")
    bound = row_bound(lab, rows.stop)
    bound = np.sum(cell, axis=1) if bound is None else bound[rows.start:]
    signal = np.abs(pair_transfer(cell)) if differential else cell
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound[:, None] > 0, signal / bound[:, None], 0.0)
    column_a = min(margin * limits["max_current_a"], margin * limits["max_total_current_a"] * float(np.max(ratio)))
    range_a = RANGE_HEADROOM * column_a
    full = float(board.adc_range_a())
    return range_a if 0 < range_a < full else None


@contextmanager
def adc_range(lab: Lab, range_a: float | None) -> Iterator[None]:
    """Read at ``range_a`` (None: the board's range as it is), the board's range restored after."""
    if range_a is None:
        yield
        return
    board = lab.readout.board
    full = float(board.adc_range_a())
    board.set_adc_range_a(range_a)
    try:
        yield
    finally:
        board.set_adc_range_a(full)


def reads_differences(lab: Lab, tile: Tile, differential: bool) -> bool:
    """Whether :func:`tile_pairs` reads ``tile`` through the board's difference channels: asked for,
    the board has them, and the tile's pairs are the channels' (an even first column)."""
    return bool(differential and getattr(lab.readout, "differential", False) and tile.block[1].start % 2 == 0)


def tile_pairs(lab: Lab, voltage_v: np.ndarray, tile: Tile, twin: TwinParameters | None, *, differential: bool,
               progress: Callable[[int], None] | None = None, range_a: float | None = None) -> np.ndarray:
    """A tile's pair outputs ``(batch, tile.pairs)`` for row voltages ``(batch, array rows)``, A.

    ``differential``: through the board's difference channels when it has them
    (``readout.mvm_pairs``); else the difference of the two columns' readings, each divided by its
    channel's gain in the twin (``sensed_a``). ``range_a``: read at this ADC range
    (:func:`adc_range`). ``progress`` is called with the vectors read.
    """
    columns = tile.block[1]
    diff = reads_differences(lab, tile, differential)
    read = lab.readout.mvm_pairs if diff else lab.readout.mvm
    out = []
    with adc_range(lab, range_a):
        for start in range(0, len(voltage_v), _BATCH):
            out.append(np.asarray(read(voltage_v[start:start + _BATCH])))
            if progress:
                progress(len(out[-1]))
    if diff:
        first = columns.start // 2
        return np.concatenate(out)[:, first:first + tile.pairs] if out else np.zeros((0, tile.pairs))
    current = sensed_a(twin, np.concatenate(out) if out else np.zeros((0, lab.readout.cols)))
    return pair_transfer(current[:, columns])


def _fit(expected: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: gain and offset of ``measured = gain * expected + offset`` (least squares)."""
    centred = expected - expected.mean(axis=0)
    spread = np.sum(centred**2, axis=0)
    varies = spread > 1e-12 * np.maximum(np.sum(expected**2, axis=0), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(varies, np.sum(centred * (measured - measured.mean(axis=0)), axis=0) / spread, 1.0)
    gain = np.where(np.isfinite(gain) & (gain > 0), gain, 1.0)
    offset = measured.mean(axis=0) - gain * expected.mean(axis=0)
    return gain, offset


def measure_affine(lab: Lab | Sequence[Lab], plan: SwitchPlan, *, vectors: int = 64, seed: int = 0, differential: bool = True,
                   ranged: bool = True, measured_bound: bool = True,
                   progress: Callable[[int], None] | None = None) -> SwitchPlan:
    """Measure every tile's per-output gain and offset with reference vectors; the plan with them.

    Parameters
    ----------
    lab : drivers.Lab, or one per board of the plan
        The lab the plan is programmed on.
    plan : SwitchPlan
        A programmed plan.
    vectors : int
        Reference vectors per tile (readings: ``vectors`` per tile).
    seed : int
        Seed of the reference vectors.
    differential : bool
        Read pairs through the board's difference channels when it has them (as ``check`` will).
    ranged : bool
        Measure (and have ``check`` read) each tile at its own ADC range (:func:`tile_range_a`).
    measured_bound : bool
        Scale the row voltages (here and in ``check``) to the cells' calibrated conductance, checked
        by measurement (:func:`declared_bound`, one reading per driven row of each step), not to
        closed branches over the smallest resistance.
    progress : callable, optional
        Called with 1 per tile.

    Raises
    ------
    EngineError
        Fewer than two vectors; not one lab per board of the plan.
    """
    from crossbar_ctl.engine._program import load_tile, readout_limits

    if vectors < 2:
        raise EngineError(f"vectors = {vectors}: the affine fit needs at least 2 reference vectors")
    labs = list(lab) if isinstance(lab, (list, tuple)) else [lab]
    if len(labs) != plan.board_count:
        raise EngineError(f"the plan is on {plan.board_count} board(s) but {len(labs)} labs were given")
    limits = [readout_limits(board_lab) for board_lab in labs]
    uses_diff = bool(differential and all(getattr(board_lab.readout, "differential", False) for board_lab in labs))
    arrays = {name: value for name, value in plan.arrays.items() if not name.endswith(".adc_range_a")}
    gains, offsets = [], []
    readings = 0
    writes = sum(getattr(board_lab.board, "switch_writes", 0) for board_lab in labs)
    inputs = reference_inputs(plan, vectors=vectors, seed=seed)
    for t, record in enumerate(plan.header.tiles):
        tile = record.tile
        board_lab = labs[tile.board]
        load_tile(board_lab, plan.step_masks(tile.step))
        with declared_bound(board_lab, plan, t, enabled=measured_bound) as bound_readings:
            voltage = reference_voltages(board_lab, plan, t, inputs[t], limits[tile.board])
            full = np.zeros((vectors, board_lab.readout.rows))
            full[:, tile.block[0]] = voltage
            range_a = (tile_range_a(board_lab, plan, t, limits[tile.board],
                                    differential=reads_differences(board_lab, tile, uses_diff)) if ranged else None)
            if range_a is not None:
                arrays[f"tile{t}.adc_range_a"] = np.array([range_a])
            measured = tile_pairs(board_lab, full, tile, plan.board_twin(tile.board), differential=uses_diff,
                                  range_a=range_a)
        readings += vectors + bound_readings
        gain, offset = _fit(voltage @ expected_s(plan, t), measured)
        arrays[f"tile{t}.affine_gain"], arrays[f"tile{t}.affine_offset_a"] = gain, offset
        gains.append(gain)
        offsets.append(offset)
        if progress:
            progress(1)
    gain_all, offset_all = np.concatenate(gains), np.concatenate(offsets)
    writes = sum(getattr(board_lab.board, "switch_writes", 0) for board_lab in labs) - writes
    record = AffineRecord(vectors=vectors, readings=readings, switch_writes=writes, differential=uses_diff, seed=seed,
                          ranged=ranged, measured_bound=measured_bound,
                          gain_rms_deviation=float(np.sqrt(np.mean((gain_all - 1) ** 2))),
                          offset_rms_a=float(np.sqrt(np.mean(offset_all**2))))
    from crossbar_ctl.engine._plan import SwitchPlan

    return SwitchPlan(plan.header.model_copy(update={"affine": record}), arrays)


def reference_inputs(plan: SwitchPlan, *, vectors: int, seed: int) -> list[np.ndarray]:
    """Each tile's reference inputs ``(vectors, tile.rows)``, entries U(0, 1), drawn in tile order
    from one seeded stream (the correction's, so that ``check`` can fit its truth evaluations on
    the same vectors)."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.0, 1.0, size=(vectors, record.tile.rows)) for record in plan.header.tiles]


def reference_voltages(lab: Lab, plan: SwitchPlan, t: int, inputs: np.ndarray, limits: dict[str, float]) -> np.ndarray:
    """Tile ``t``'s row voltages ``(vectors, tile.rows)`` for its reference inputs, scaled as
    ``check`` scales inputs (its step loaded: the drivers' row bound depends on the masks)."""
    from crossbar_ctl.engine._program import row_bound

    rows = plan.header.tiles[t].tile.block[0]
    bound = row_bound(lab, rows.stop)
    voltage, _ = row_voltages(inputs, plan.tile(t, "cell_s"), row_bound_s=None if bound is None else bound[rows.start:],
                              **limits)
    return voltage


def expected_s(plan: SwitchPlan, t: int) -> np.ndarray:
    """The pair transfer tile ``t``'s correction maps its readings to: the targets, or, when the plan
    carries a residual plan (:mod:`crossbar_ctl.engine._residual`), the closed loop's measurement
    (the residual plan adds the rest)."""
    if plan.header.residual is not None:
        return pair_transfer(plan.tile(t, "measured_s"))
    return plan.tile(t, "target_s")


def fit_affine(plan: SwitchPlan, t: int, voltage_v: np.ndarray, pairs_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The correction (gain, offset_a) that :func:`measure_affine` would fit to a noiseless tile
    whose pair transfer is ``pairs_s`` ``(tile.rows, tile.pairs)``, S, on the reference voltages
    ``voltage_v``: how ``check`` corrects its truth evaluations as it corrects the measurement."""
    return _fit(voltage_v @ expected_s(plan, t), voltage_v @ pairs_s)


def validate_affine(plan: SwitchPlan) -> AffineRecord | None:
    """The plan's affine correction, its arrays checked (None: the plan has none).

    Raises
    ------
    EngineError
        A tile's gain or offset missing, of the wrong shape, not finite, or a gain not positive (the
        residual plan's too).
    """
    if plan.residual is not None:
        validate_affine(plan.residual)
    record = plan.header.affine
    if record is None:
        return None
    for t, tile_record in enumerate(plan.header.tiles):
        pairs = tile_record.tile.pairs
        for name in ("affine_gain", "affine_offset_a"):
            value = plan.arrays.get(f"tile{t}.{name}")
            if value is None or np.shape(value) != (pairs,) or not np.all(np.isfinite(value)):
                raise EngineError(f"the plan's affine correction is damaged (tile{t}.{name}: expected {pairs} "
                                  "finite values); program the plan again")
        if np.any(plan.arrays[f"tile{t}.affine_gain"] <= 0):
            raise EngineError(f"the plan's affine correction is damaged (tile{t}.affine_gain not positive); "
                              "program the plan again")
        range_a = plan.arrays.get(f"tile{t}.adc_range_a")
        if range_a is not None and (np.shape(range_a) != (1,) or not 0 < float(range_a[0]) <= 1.0):
            raise EngineError(f"the plan's affine correction is damaged (tile{t}.adc_range_a: expected one range "
                              "in (0, 1] A); program the plan again")
    return record


def tile_range(plan: SwitchPlan, t: int) -> float | None:
    """The ADC range tile ``t`` is read at (its correction was measured at), A; None: the board's."""
    value = plan.arrays.get(f"tile{t}.adc_range_a") if plan.header.affine is not None else None
    return None if value is None else float(value[0])


def correct_pairs(plan: SwitchPlan, t: int, pairs_a: np.ndarray,
                  affine: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Tile ``t``'s pair outputs ``(batch, pairs)`` corrected: ``(y - offset_a) / gain`` with the
    plan's correction, or with ``affine`` = (gain, offset_a) (as they are when the plan has none)."""
    if plan.header.affine is None:
        return pairs_a
    gain, offset = affine if affine is not None else (plan.tile(t, "affine_gain"), plan.tile(t, "affine_offset_a"))
    return (pairs_a - offset) / gain
