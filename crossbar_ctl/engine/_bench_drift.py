"""``crossbar bench drift``: precision after days of drift and a temperature step, and what
recalibrate + program --update win back, at what cost.

For each scenario a fresh simulated lab (the same seed, so the same board) is calibrated, a
network programmed and checked (*fresh*); then the simulated clock advances ``days`` (or the
temperature steps by ``+10 K``) and the plan is checked as it is (*stale*, the guard's probe kept);
then ``recalibrate_plan`` and ``update_plan`` run and it is checked again (*after*); last the
board is calibrated and the network programmed afresh and checked (*reprogrammed*: the figure a
full recalibration gets at that moment, a same-run reference for *after*). Bits are the
least over the network's layers of the realized median (the simulator's noiseless truth) and of the
ENOB (variance convention). ``readings_fraction`` is the recalibration's readings (its sample, the
re-measured rows and the plan probe) over the full calibration's; ``rewrites_fraction`` the cells
whose switches changed over the plan's cells (what a full program writes).

The ``+10 K`` step is compensated through a TCR estimate fitted from a second full calibration
10 K warmer, taken before programming (not counted in ``readings_fraction``; it is a one-off per
array, not per recalibration): recalibrate and program --update predict the conductances at the
measured temperature. ``+10 K uncompensated`` is the same step with no TCR estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from crossbar_ctl.core.errors import EngineError

__all__ = ["SCENARIOS", "bench_drift"]

SCENARIOS = ("1 d", "7 d", "31 d", "+10 K", "+10 K uncompensated")
"""The bench's rows: days of drift after programming, and a temperature step with and without the
TCR compensation."""
_COMPENSATED = {"+10 K": True, "+10 K uncompensated": False}
_STEP_K = 10.0


def _figures(report: Any) -> tuple[float, float]:
    """Least realized median bits and least ENOB over a check report's layers."""
    realized = [layer.realized_bits.median for layer in report.layers if layer.realized_bits is not None]
    return (min(realized) if realized else float("nan")), min(layer.enob for layer in report.layers)


def bench_drift(*, scenarios: Sequence[str] = SCENARIOS, rows: int = 16, cols: int = 16, branches: int = 8,
                samples: int = 100, profile: str = "pcb", drift_per_hour: float | None = None,
                demo: bool = False, seed: int = 0, max_fraction: float = 0.15,
                progress: Callable[[int], None] | None = None,
                reports: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Fresh, stale and recovered precision per scenario on a simulated lab.

    Parameters
    ----------
    scenarios : sequence of str
        Among :data:`SCENARIOS` (``"<days> d"`` for any number of days).
    rows, cols, branches : int
        The array (a U(-1, 1) layer of ``rows - 1`` inputs and ``cols // 2`` outputs, one tile).
    samples : int
        Inputs of each check.
    profile : {"pcb", "ideal", "harsh"}
    drift_per_hour : float, optional
        The resistors' relative random-walk drift per sqrt(hour) (default: the profile's; ``pcb``
        1.6e-5, the thin-film datasheet bound).
    demo : bool
        The demo's lab (64x64x8, five faults) and the digits MLP with its test set instead.
    seed : int
    max_fraction : float
        The recalibration's share of a full calibration's readings.
    progress : callable, optional
        Called with 1 per scenario.
    reports : list, optional
        Appended per scenario with its check reports (``fresh``, ``stale``, ``kept``, ``after``) and
        the recalibration's and update's reports (``recalibration``, ``update``), to look inside a row.

    Returns
    -------
    list of dict
        One row per scenario: ``scenario``, ``realized_bits_fresh``, ``realized_bits_stale``,
        ``realized_bits_after``, ``enob_fresh``, ``enob_stale``, ``enob_after``,
        ``enob_after_kept_affine`` (the same update checked with the affine correction measured at
        programming, before it is measured again), ``realized_bits_reprogrammed`` and
        ``enob_reprogrammed`` (what the update stands in for: after it, the board calibrated and the
        network programmed afresh, checked: the fresh figures spread between programmings of one
        board, 16x16x8 seeds 2 and 3: 0.35 and 0.37 bit realized over three, so *after* is held to
        this same-run reference too),
        ``readings_fraction``, ``rewrites_fraction``, ``switch_writes_fraction`` (the update's
        switch writes counted by the driver, its trials included, over the programming's),
        ``guard_fresh`` and ``guard_stale`` (the
        guard would refuse), ``bits_lost_probe`` (the stale probe's estimate), ``temperature_c``
        (stale), ``wall_s``.
    """
    from calibration import calibrate, fit_tcr
    from crossbar_ctl._lab import advance_sim_time, open_lab, set_sim_temperature_c
    from crossbar_ctl.core.config import load_lab_config
    from crossbar_ctl.engine._bench import uniform_layer
    from crossbar_ctl.engine._update import recalibrate_plan, remeasure_affine, update_plan
    from crossbar_ctl.engine._workflow import check_network, program_network

    for name in scenarios:
        if name not in _COMPENSATED and not (name.endswith(" d") and _days(name) > 0):
            raise EngineError(f"scenario {name!r}: expected '<days> d', '+10 K' or '+10 K uncompensated'")
    if demo:
        from crossbar_ctl.engine._demo import DEMO_LAB, DIGITS_NETWORK
        from crossbar_ctl.engine._network import load_dataset, load_network

        config = load_lab_config(str(DEMO_LAB))
        network = load_network(str(DIGITS_NETWORK))
        x, _ = load_dataset(str(DIGITS_NETWORK))
        x = x[:samples]
        sim = config.sim.model_copy(update={"profile": profile, "seed": seed})
    else:
        network, x = uniform_layer(rows - 1, cols // 2, samples=samples, seed=seed)
        config = load_lab_config({"name": "bench-drift", "sim": {"rows": rows, "cols": cols, "branches": branches,
                                                                  "profile": profile, "seed": seed}})
        sim = config.sim
    if drift_per_hour is not None:
        sim = sim.model_copy(update={"drift_per_hour": drift_per_hour})
    config = config.model_copy(update={"sim": sim})
    results = []
    for name in scenarios:
        started = time.monotonic()
        with open_lab(config) as lab:
            record = calibrate(lab)
            tcr = None
            if _COMPENSATED.get(name):  # the TCR from a second record, 10 K warmer, before programming
                base = lab.temperature_c()
                set_sim_temperature_c(lab, base + _STEP_K)
                tcr = fit_tcr([record, calibrate(lab)])
                set_sim_temperature_c(lab, base)
            plan = program_network(lab, network, record)
            fresh = check_network(lab, plan, x)
            if name in _COMPENSATED:
                set_sim_temperature_c(lab, lab.temperature_c() + _STEP_K)
            else:
                advance_sim_time(lab, _days(name) * 86400.0)
            stale = check_network(lab, plan, x, allow_stale=True)
            new, recal = recalibrate_plan(lab, plan, record, tcr=tcr, max_fraction=max_fraction, seed=seed)
            updated, update = update_plan(lab, plan, new, tcr=tcr, affine_vectors=0)
            kept = check_network(lab, updated, x, allow_stale=True)  # the affine correction of programming
            after = check_network(lab, remeasure_affine(lab, updated), x, allow_stale=True)  # as update_plan ends
            # what the update stands in for: the board calibrated and programmed afresh, now
            full = check_network(lab, program_network(lab, network, calibrate(lab)), x)
        (bits_fresh, enob_fresh), (bits_stale, enob_stale), (bits_after, enob_after), (bits_full, enob_full) = (
            _figures(fresh), _figures(stale), _figures(after), _figures(full))
        probe = stale.drift_probe
        if reports is not None:
            reports.append({"scenario": name, "fresh": fresh, "stale": stale, "kept": kept, "after": after,
                            "reprogrammed": full,
                            "recalibration": recal, "update": update})
        results.append({
            "scenario": name, "realized_bits_fresh": bits_fresh, "realized_bits_stale": bits_stale,
            "realized_bits_after": bits_after, "enob_fresh": enob_fresh, "enob_stale": enob_stale,
            "enob_after": enob_after, "enob_after_kept_affine": _figures(kept)[1],
            "realized_bits_reprogrammed": bits_full, "enob_reprogrammed": enob_full,
            "readings_fraction": recal.readings_fraction,
            "rewrites_fraction": update.rewrites_fraction,
            "switch_writes_fraction": update.switch_writes / max(plan.header.program.cost.switch_writes, 1),
            "guard_fresh": bool(fresh.drift_probe and fresh.drift_probe.over_budget),
            "guard_stale": bool(probe and probe.over_budget),
            "guard_after": bool(after.drift_probe and after.drift_probe.over_budget),
            "bits_lost_probe": max(layer.bits_lost for layer in probe.layers) if probe else None,
            "temperature_c": probe.temperature_c if probe else None,
            "wall_s": time.monotonic() - started,
        })
        if progress:
            progress(1)
    return results


def _days(name: str) -> float:
    try:
        return float(name.removesuffix(" d"))
    except ValueError:
        return float("nan")
