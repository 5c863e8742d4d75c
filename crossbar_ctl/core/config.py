"""Configuration models: the lab file (TOML), safety limits and the simulated array.

Every model is strict: unknown keys are refused (a misspelt ``max_voltage_v`` must not vanish),
values are bounded, units are SI and in the field name. Load a lab file with
:func:`load_lab_config`; a bad file raises :class:`~crossbar_ctl.core.errors.ConfigError` naming the
key, the value and what is allowed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crossbar_ctl.core.errors import ConfigError

__all__ = [
    "LAB_SCHEMA_VERSION",
    "BoardConfig",
    "Fault",
    "InstrumentConfig",
    "InstrumentsConfig",
    "LabConfig",
    "Limits",
    "MODELS",
    "ResistorPopulation",
    "SimArrayConfig",
    "SourceMeterConfig",
    "StrictModel",
    "SwitchBoardConfig",
    "SwitchMatrixConfig",
    "config_error",
    "load_lab_config",
]

LAB_SCHEMA_VERSION = 1


class StrictModel(BaseModel):
    """Base of every configuration and record model: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(StrictModel):
    """Safety limits, checked before any byte leaves for an instrument."""

    max_voltage_v: float = Field(1.0, gt=0, le=200)
    """Largest |V| applied to any array line."""
    max_current_a: float = Field(1e-3, gt=0, le=1)
    """Largest |I| through any one instrument terminal (also the SMU compliance ceiling)."""
    max_power_w: float = Field(0.01, gt=0, le=10)
    """Largest power dissipated in any one resistor, V^2 / R_min."""
    max_total_current_a: float = Field(0.05, gt=0, le=10)
    """Largest sum of |I| over all driven lines at once."""
    ramp_step_v: float = Field(0.5, gt=0, le=200)
    """Voltage changes larger than this are applied in steps of at most this size."""
    min_resistance_ohm: float | None = Field(None, gt=0)
    """Smallest resistance behind one closed branch, for the power check; ``None``: derived from
    the ``[sim]`` population, or a conservative 1 kOhm on hardware."""


class ResistorPopulation(StrictModel):
    """How the cheap resistors of the array are drawn."""

    kind: Literal["lognormal", "uniform", "ladder"] = "lognormal"
    """``lognormal``: R = nominal * exp(N(0, spread)); ``uniform``: R = nominal * U(1 - spread,
    1 + spread); ``ladder``: branch k has nominal * 2**k, times a lognormal spread."""
    nominal_resistance_ohm: float = Field(10e3, gt=0)
    """Nominal resistance of one resistor."""
    spread: float = Field(0.2, ge=0, lt=1)
    """Relative spread (lognormal sigma, or uniform half-width)."""


class Fault(StrictModel):
    """One fault of the simulated array, at one branch."""

    kind: Literal["open_resistor", "short_resistor", "switch_stuck_open", "switch_stuck_closed"]
    row: int = Field(ge=0)
    col: int = Field(ge=0)
    branch: int = Field(ge=0)


class SimArrayConfig(StrictModel):
    """The simulated physical array and the simulated instruments' imperfections."""

    rows: int = Field(64, ge=1, le=1024)
    cols: int = Field(64, ge=1, le=1024)
    branches: int = Field(8, ge=1, le=64)
    """Resistor + switch branches per cell."""
    population: ResistorPopulation = ResistorPopulation()
    switch_on_resistance_ohm: float = Field(20.0, ge=0)
    """Mean on-resistance of a closed branch switch."""
    switch_on_spread: float = Field(0.1, ge=0, lt=1)
    """Relative (lognormal) spread of the switch on-resistance."""
    switch_off_conductance_s: float = Field(1e-12, ge=0)
    """Leakage conductance of an open branch switch."""
    row_wire_resistance_ohm: float = Field(0.5, ge=0)
    """Wire resistance of one row segment between adjacent cells (and from the driver to cell 0)."""
    col_wire_resistance_ohm: float = Field(0.5, ge=0)
    """Wire resistance of one column segment between adjacent cells (and from the last cell to the
    sense end)."""
    sense_resistance_ohm: float = Field(10.0, ge=0)
    """Input resistance of a column's sense amplifier (or of the ground route)."""
    temperature_c: float = Field(25.0, ge=-50, le=150)
    """Ambient temperature at the start of a run."""
    start_time_s: float = Field(0.0, ge=0, le=3.2e8)
    """Simulated time at which the lab opens, s (the array has drifted that long since it was made:
    the same board, days later, in another process)."""
    reference_temperature_c: float = Field(25.0, ge=-50, le=150)
    """Temperature at which the drawn resistances hold."""
    tcr_per_k: float = Field(1e-4, ge=-0.1, le=0.1)
    """Temperature coefficient of resistance, relative per kelvin."""
    drift_per_hour: float | None = Field(None, ge=0, le=0.1)
    """Relative random-walk drift of every resistor per square-root hour of simulated time (standard
    deviation); None: the profile's (``sim/_physics.py``: ``pcb`` 1.6e-5, thin film; ``ideal`` and
    ``harsh`` 1e-4)."""
    relative_noise: float = Field(1e-4, ge=0, le=0.1)
    """Relative read noise (standard deviation) at 1 NPLC; scales as 1/sqrt(NPLC)."""
    noise_floor_fraction: float = Field(1e-6, ge=0, le=0.1)
    """Absolute read-noise floor as a fraction of the measurement range at 1 NPLC."""
    adc_bits: int = Field(18, ge=4, le=32)
    """Resolution of the board's column ADCs over their range (readout quantization)."""
    adc_range_a: float = Field(1e-3, gt=0)
    """Full-scale current of the board's column ADCs."""
    dac_max_voltage_v: float = Field(1.0, gt=0)
    """Largest |V| the board's row DACs can produce."""
    has_readout: bool = True
    """The board has row DACs and column ADCs (parallel MVM)."""
    profile: Literal["ideal", "pcb", "harsh"] = "pcb"
    """Hardware profile: the effects the controller does not model (``sim/_physics.py``): ``pcb``
    (default, a discrete board), ``harsh``, or ``ideal`` (the controller's own model)."""
    physics: dict[str, dict[str, Any]] = {}
    """Overrides of the profile, ``{group: {key: value}}``; validated by the simulator."""
    faults: tuple[Fault, ...] = ()
    seed: int = Field(0, ge=0)
    """Seed of every random draw of the array (resistors, switches, noise)."""
    noise_seed: int | None = Field(None, ge=0)
    """Another realization of the read noise on the same board (its resistors, switches, drift and
    faults still drawn from ``seed``); None: the noise drawn from ``seed``. One run of a
    deterministic job is one noise realization: compare engine changes over several."""

    @model_validator(mode="after")
    def _faults_inside(self) -> "SimArrayConfig":
        for index, fault in enumerate(self.faults):
            if fault.row >= self.rows or fault.col >= self.cols or fault.branch >= self.branches:
                raise ValueError(
                    f"faults[{index}] at ({fault.row}, {fault.col}, {fault.branch}) lies outside "
                    f"the {self.rows}x{self.cols} array of {self.branches} branches"
                )
        return self


MODELS: dict[str, tuple[str, ...]] = {
    "switch_board": ("switchboard",),
    "source_meter": ("keithley2450", "keithley2400"),
    "switch_matrix": ("e5250a", "b2200"),
}
"""The driver models each role accepts (any case); the first is the role's default."""


class InstrumentConfig(StrictModel):
    """One instrument: where it is and what it is (the base of the per-role models below)."""

    role: ClassVar[str] = ""
    uri: str = Field(min_length=1)
    """``visa://<resource>``, ``serial://<port or url>`` or ``sim://<name>``."""
    model: str = ""
    """Driver model, one of :data:`MODELS` for the role (any case, kept in lower case); empty: the
    role's default."""
    timeout_s: float = Field(2.0, gt=0, le=600)
    reconnects: int = Field(1, ge=0, le=10)
    """How many times a dropped connection is reopened before giving up."""

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        allowed = MODELS.get(cls.role)
        if allowed and model and model.lower() not in allowed:
            raise ValueError(f"unknown {cls.role} model; known models: {', '.join(allowed)}")
        return model.lower()


class SwitchBoardConfig(InstrumentConfig):
    """The switch board: branch switches and line routing (model ``switchboard``)."""

    role: ClassVar[str] = "switch_board"


class SourceMeterConfig(InstrumentConfig):
    """The source-meter (models ``keithley2450``, ``keithley2400``)."""

    role: ClassVar[str] = "source_meter"


class SwitchMatrixConfig(InstrumentConfig):
    """The switch matrix (models ``e5250a``, ``b2200``)."""

    role: ClassVar[str] = "switch_matrix"


class InstrumentsConfig(StrictModel):
    """Instruments by role."""

    switch_board: SwitchBoardConfig = SwitchBoardConfig(uri="sim://board", model="switchboard")
    source_meter: SourceMeterConfig | None = SourceMeterConfig(uri="sim://smu", model="keithley2450")
    switch_matrix: SwitchMatrixConfig | None = None
    routing: Literal["board", "matrix"] = "board"
    """Which instrument routes the SMU terminals to array lines."""


class BoardConfig(StrictModel):
    """A further board (array) of a lab, used in parallel beside the lab's own: its instruments,
    and the simulated array behind their ``sim://`` URIs."""

    name: str = ""
    instruments: InstrumentsConfig = InstrumentsConfig()
    sim: SimArrayConfig | None = None
    """Its own simulated array; ``None``: the lab's ``[sim]`` with ``seed`` plus the board's index
    (another array of the same design: every resistor drawn anew)."""


class LabConfig(StrictModel):
    """A whole lab: instruments by role, safety limits, and the simulated array when simulated."""

    schema_version: int = LAB_SCHEMA_VERSION
    name: str = "simulated-lab"
    instruments: InstrumentsConfig = InstrumentsConfig()
    limits: Limits = Limits()
    sim: SimArrayConfig | None = SimArrayConfig()
    """The simulated array behind ``sim://`` instruments; ``None`` for a real lab."""
    boards: tuple[BoardConfig, ...] = ()
    """Further boards beside the one of ``instruments`` (board 0), each a ``[[boards]]`` table; a
    network's tiles are split among all of them (:meth:`board`)."""

    def board(self, index: int) -> "LabConfig":
        """Board ``index`` as a lab of its own (0: this lab's instruments; the limits are shared)."""
        if index == 0:
            return self.model_copy(update={"boards": ()})
        board = self.boards[index - 1]
        sim = board.sim or (self.sim.model_copy(update={"seed": self.sim.seed + index}) if self.sim else None)
        return LabConfig(name=board.name or f"{self.name}/board{index}", instruments=board.instruments,
                         limits=self.limits, sim=sim)

    @model_validator(mode="after")
    def _checks(self) -> "LabConfig":
        if self.schema_version > LAB_SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is newer than this crossbar-ctl "
                f"understands ({LAB_SCHEMA_VERSION}); upgrade crossbar-ctl"
            )
        uris = [self.instruments.switch_board.uri]
        for inst in (self.instruments.source_meter, self.instruments.switch_matrix):
            if inst is not None:
                uris.append(inst.uri)
        if any(uri.startswith("sim://") for uri in uris) and self.sim is None:
            raise ValueError("sim:// instruments need a [sim] table describing the simulated array")
        if self.instruments.routing == "matrix" and self.instruments.switch_matrix is None:
            raise ValueError("routing = 'matrix' needs an [instruments.switch_matrix]")
        for index in range(1, len(self.boards) + 1):
            board = self.board(index)  # validated as a lab of its own
            if board.sim and self.sim and (board.sim.rows, board.sim.cols, board.sim.branches) != (
                    self.sim.rows, self.sim.cols, self.sim.branches):
                raise ValueError(f"boards[{index - 1}]: every board must have the lab's geometry "
                                 f"{self.sim.rows}x{self.sim.cols}x{self.sim.branches}")
        return self


def _short(value: Any, width: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``width`` characters."""
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def config_error(exc: ValidationError, source: str) -> ConfigError:
    """Turn a pydantic ``ValidationError`` into one readable :class:`ConfigError`."""
    lines = []
    first_key = None
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        first_key = first_key or key
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {_short(value)}"
        lines.append(f"{key}{shown}: {err['msg']}")
    return ConfigError(f"{source}: " + "; ".join(lines), key=first_key)


def load_lab_config(source: str | Path | dict[str, Any] | LabConfig | None = None) -> LabConfig:
    """Load and validate a lab configuration.

    Parameters
    ----------
    source : path, dict, LabConfig or None
        A TOML file, an already parsed mapping, a model, or ``None`` for the default simulated lab.

    Raises
    ------
    ConfigError
        The file is missing, not TOML, or a key is unknown or out of range.
    """
    if source is None:
        return LabConfig()
    if isinstance(source, LabConfig):
        return source
    name = "lab configuration"
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: no such lab file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    else:
        data = source
    try:
        return LabConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, name) from exc
