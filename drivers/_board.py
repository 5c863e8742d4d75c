"""The switch board (role ``SwitchBoard``): docs/switchboard-protocol.md, version 1.

Every command line gets one reply line, ``OK [payload]`` or ``ERR <code> <text>``; an ``ERR``
raises :class:`InstrumentReportedError` at once (a failed command changes nothing on the board).
The driver keeps the masks it knows the board holds, so :meth:`SwitchBoard.load_masks` sends only
the rows that changed, and every row load is checksummed and read back.
"""

from __future__ import annotations

import binascii
import re

import numpy as np

from crossbar_ctl.core.errors import InstrumentReportedError, LimitError, ProtocolError
from drivers._safety import SafetyGuard, check_choice, check_int, check_number
from drivers._scpi import OVERFLOW, format_number
from drivers._transport import Transport

__all__ = ["BOUND_MARGIN", "COL_ROUTES", "LINE_BYTES", "PROBE_FRACTION", "ROW_ROUTES", "SETTLE_TIME_CONSTANTS", "SwitchBoard",
           "crc16_ccitt"]

ROW_ROUTES = ("SRC", "GND", "FLOAT")
COL_ROUTES = ("SENSE", "GND", "FLOAT")
_ERR = re.compile(r"ERR (\d+) ?(.*)")
BOUND_MARGIN = 1.05
"""A row's calibrated conductance times this bounds its current
(:meth:`SwitchBoard.declare_cell_conductance_s`): the calibration's uncertainty (3e-4 on the demo),
drift and temperature since (1.6e-5 per sqrt(hour) on ``pcb``), and the column nodes' swing under
rows of both signs (``tests/drivers/test_measured_bound.py``: random signed inputs on the demo's
64x64x8 board stay within the limit)."""
PROBE_FRACTION = 0.1
""":meth:`SwitchBoard.declare_cell_conductance_s` probes each row at this fraction of the voltage
the closed-branch bound allows it: a branch shorted since calibration draws a tenth of what it
would at that voltage."""
LINE_BYTES = 65536
"""The longest line a board takes (docs/switchboard-protocol.md): a batch goes out in lines of at
most this many bytes, terminator included."""
_BATCH_SECONDS_PER_VECTOR_PLC = 2 / 50
"""A batch line's wait beyond the link's timeout, per vector and power-line cycle of ``ADCNPLC``:
twice the integration at 50 Hz."""
_BATCH_SECONDS_PER_BYTE = 2 * 10 / 115200
"""... and per byte sent or answered: twice a byte's time at the protocol's 115200 baud (8N1)."""
_REPLY_BYTES_PER_VALUE = 17
"""A current on the wire: ``%.9e`` and its separator."""
SETTLE_TIME_CONSTANTS = 16
"""A switch write is followed by ``WAIT`` for this many settling time constants (``SETTLE?``):
a reading's error falls to exp(-16) ~ 1e-7 of the switched current, below an 18-bit LSB."""


def crc16_ccitt(text: str) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of ASCII text, as ``LOAD`` and ``ROW?`` use."""
    return binascii.crc_hqx(text.encode("ascii"), 0xFFFF)


class SwitchBoard:
    """The branch switches of every cell and the routing of every line, over a serial line.

    Parameters
    ----------
    transport : Transport
        An open transport to the board.
    guard : SafetyGuard, optional
        The lab's limits, applied to readout voltages.

    Attributes
    ----------
    idn : str
        The board's ``*IDN?`` payload.
    settle_s : float
        How long every switch write is followed by ``WAIT``, s (0 unless ``CAP?`` lists ``SETTLE``).
    version : int
        Increases whenever the driver changes a mask or a route (lets readouts cache per state).
    route_version : int
        Increases whenever the driver changes a route.
    row_writes, switch_writes, settle_waits, bound_readings : int
        What the driver has sent since it connected: rows loaded (``LOAD``), branch switches those
        rows and ``SET``, ``SAFE`` and ``*RST`` change from the state the board held (every switch
        of a row whose previous state is unknown), settling waits (``WAIT``), and the readings
        :meth:`declare_cell_conductance_s` took.
    """

    def __init__(self, transport: Transport, *, guard: SafetyGuard | None = None) -> None:
        self.transport = transport
        self.guard = guard if guard is not None else SafetyGuard()
        self.idn = self._command("*IDN?")
        fields = self.idn.split(",")
        if len(fields) != 4:
            raise ProtocolError(f"expected a switch board (<maker>,<model>,<serial>,<firmware>), got {self.idn!r}",
                                address=self.address, command="*IDN?")
        self._geometry = self._parse_geometry(self._command("GEOM?"))
        self._capabilities = frozenset(self._command("CAP?").upper().split())
        self.settle_s = (SETTLE_TIME_CONSTANTS * self._number("SETTLE?")
                         if "SETTLE" in self._capabilities else 0.0)
        self._masks: np.ndarray | None = None  # what the board holds, once known
        self._dac_max_v: float | None = None
        self._dac_bits: int | None = None
        self._nplc: float | None = None  # ADCNPLC, once set or read
        self._bound: tuple[int, np.ndarray] | None = None  # (version, conductance bound)
        self._declared: tuple[int, np.ndarray, np.ndarray] | None = None  # (version, bound, cells declared)
        self._in_force = False  # whether the declared bound applies
        self.version = 0
        self.route_version = 0
        self.row_writes = self.switch_writes = self.settle_waits = self.bound_readings = 0

    def _count_switches(self, old: np.ndarray | None, new: np.ndarray) -> None:
        """Add the switches that change from ``old`` (None: unknown, every switch) to ``new``."""
        changed = np.bitwise_xor(old, new) if old is not None else np.full_like(new, (1 << self._geometry[2]) - 1)
        self.switch_writes += int(np.bitwise_count(changed.astype(np.uint64)).sum())

    @property
    def address(self) -> str:
        """The board's URI."""
        return self.transport.address

    def __repr__(self) -> str:
        return f"SwitchBoard({self.address!r})"

    # ---- the exchange -------------------------------------------------------------------------
    def _command(self, command: str) -> str:
        """Send one line, return the ``OK`` payload; ``ERR`` raises InstrumentReportedError."""
        reply = self.transport.query(command)
        if reply == "OK":
            return ""
        if reply.startswith("OK "):
            return reply[3:]
        match = _ERR.fullmatch(reply)
        if match:
            raise InstrumentReportedError(int(match.group(1)), match.group(2), address=self.address, command=command)
        shown = reply if len(reply) <= 60 else reply[:57] + "..."
        raise ProtocolError(f"expected OK or ERR, got {shown!r}", address=self.address, command=command)

    def _parse_geometry(self, payload: str) -> tuple[int, int, int]:
        try:
            rows, cols, branches = (int(item) for item in payload.split())
        except ValueError:
            raise ProtocolError(f"expected '<rows> <cols> <branches>', got {payload!r}", address=self.address,
                                command="GEOM?") from None
        return rows, cols, branches

    # ---- identification and status --------------------------------------------------------------
    def geometry(self) -> tuple[int, int, int]:
        """``(rows, cols, branches)`` of the array (``GEOM?``, read on connect)."""
        return self._geometry

    def capabilities(self) -> set[str]:
        """The board's capabilities (``CAP?``): ``{"MVM"}`` for boards with DACs and ADCs."""
        return set(self._capabilities)

    @property
    def has_readout(self) -> bool:
        """Whether the board runs whole matrix-vector products (``MVM`` in ``CAP?``)."""
        return "MVM" in self._capabilities

    @property
    def has_batch(self) -> bool:
        """Whether the board takes batches (``BATCH`` in ``CAP?``): rows read back a line (``ROWS?``),
        vectors read a line (``MVMB``, ``MVMDB``)."""
        return "BATCH" in self._capabilities

    @property
    def has_differential(self) -> bool:
        """Whether the board reads column pairs' differences (``DIFF`` in ``CAP?``, ``MVMD``)."""
        return "MVM" in self._capabilities and "DIFF" in self._capabilities

    def temperature_c(self) -> float:
        """``TEMP?``: the board's temperature sensor, degrees Celsius."""
        return self._number("TEMP?")

    def errors(self) -> list[tuple[int, str]]:
        """Drain the board's error queue (``ERR?``), oldest first."""
        found = []
        for _ in range(64):
            payload = self._command("ERR?")
            code, _, text = payload.partition(" ")
            if not code.isdigit():
                raise ProtocolError(f"expected '<code> <text>', got {payload!r}", address=self.address, command="ERR?")
            if int(code) == 0:
                return found
            found.append((int(code), text))
        raise ProtocolError("error queue does not empty", address=self.address, command="ERR?")

    def check_errors(self) -> None:
        """Raise the oldest queued board error, if any."""
        found = self.errors()
        if found:
            raise InstrumentReportedError(*found[0], address=self.address, command="ERR?")

    def reset(self) -> None:
        """``*RST``: the safe state, and the error queue cleared."""
        self._command("*RST")
        self._became_safe()
        self.settle()

    def _number(self, command: str) -> float:
        payload = self._command(command)
        try:
            return float(payload)
        except ValueError:
            raise ProtocolError(f"expected a number, got {payload!r}", address=self.address, command=command) from None

    # ---- masks ------------------------------------------------------------------------------------
    def _cell(self, row: int, col: int) -> tuple[int, int]:
        rows, cols, _ = self._geometry
        return check_int("row", row, 0, rows - 1), check_int("col", col, 0, cols - 1)

    def _check_masks(self, masks: object, shape: tuple[int, ...]) -> np.ndarray:
        array = np.asarray(masks)
        if array.shape != shape or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
            raise LimitError("masks", np.nan, np.nan, f"expected integers of shape {shape}, got "
                             f"{array.dtype} {array.shape}")
        branches = self._geometry[2]
        limit = (1 << branches) - 1
        if np.any(array < 0) or np.any(array.astype(np.uint64) > np.uint64(limit)):
            raise LimitError("mask", float(array.max()), limit, f"{branches} branches per cell")
        return array.astype(np.uint64)

    def set_mask(self, row: int, col: int, mask: int) -> None:
        """``SET <r> <c> <mask>``: close the branches whose bits are set in ``mask``."""
        row, col = self._cell(row, col)
        mask = check_int("mask", mask, 0, (1 << self._geometry[2]) - 1)
        self._command(f"SET {row} {col} {mask:x}")
        self._count_switches(None if self._masks is None else self._masks[row, col], np.uint64(mask))
        if self._masks is not None:
            self._masks[row, col] = mask
        self.version += 1
        self.settle()

    def get_mask(self, row: int, col: int) -> int:
        """``GET? <r> <c>``: the cell's mask as set."""
        row, col = self._cell(row, col)
        payload = self._command(f"GET? {row} {col}")
        try:
            return int(payload, 16)
        except ValueError:
            raise ProtocolError(f"expected a hex mask, got {payload!r}", address=self.address,
                                command=f"GET? {row} {col}") from None

    def settle(self) -> None:
        """``WAIT <settle_s>``: let the switches settle after a write (nothing when 0).

        Every method that writes switches calls it, so no reading starts on moving switches.
        """
        if self.settle_s > 0:
            self._command(f"WAIT {format_number(self.settle_s)}")
            self.settle_waits += 1

    def load_row(self, row: int, masks: object, *, settle: bool = True) -> None:
        """``LOAD <r> <masks> <crc>``, then ``ROW? <r>``: the board must hold exactly ``masks``.

        ``settle``: then :meth:`settle` (``load_masks`` settles once after its last row).

        Raises
        ------
        ProtocolError
            The read-back differs from what was sent.
        """
        row = check_int("row", row, 0, self._geometry[0] - 1)
        values = self._check_masks(masks, (self._geometry[1],))
        self._load([row], values[None])
        self._verify([row], values[None])
        if settle:
            self.settle()

    def _load(self, rows: list[int], values: np.ndarray) -> None:
        """Set checked rows ``values (len(rows), cols)``, tracked (read back by the caller): ``LOADB``
        lines within :data:`LINE_BYTES` on a board listing ``BATCH``, else a ``LOAD`` each."""
        texts = [",".join(f"{int(mask):x}" for mask in row_values) for row_values in values]
        batch = self.has_batch and len(rows) > 1
        if batch:
            # "LOADB <rows> <masks> <crc>\n": 13 bytes besides the lists; each row adds its
            # number, its masks and two separators.
            groups = _groups([len(str(row)) + len(text) + 2 for row, text in zip(rows, texts)], LINE_BYTES - 13)
        else:
            groups = [slice(k, k + 1) for k in range(len(rows))]
        for group in groups:
            text = ";".join(texts[group])
            numbers = ",".join(map(str, rows[group]))
            self._command(f"{'LOADB' if batch else 'LOAD'} {numbers} {text} {crc16_ccitt(text):04x}")
            for row, row_values in zip(rows[group], values[group]):
                self.version += 1
                self.row_writes += 1
                self._count_switches(None if self._masks is None else self._masks[row], row_values)
                if self._masks is not None:
                    self._masks[row] = row_values

    def _verify(self, rows: list[int], values: np.ndarray) -> None:
        """Read ``rows`` back: the board must hold exactly ``values`` ``(len(rows), cols)``."""
        if not np.array_equal(self.read_rows(rows), values):
            self._masks = None  # no longer known
            raise ProtocolError("row read back differs from the row loaded", address=self.address,
                                command=f"ROW? {rows[0]}" if len(rows) == 1 else f"ROWS? {rows[0]},...")

    def read_row(self, row: int) -> np.ndarray:
        """``ROW? <r>``: one row's masks, ``uint64 (cols,)``, checksum verified."""
        row = check_int("row", row, 0, self._geometry[0] - 1)
        command = f"ROW? {row}"
        return self._row_masks(self._command(command), command)

    def _row_masks(self, payload: str, command: str) -> np.ndarray:
        """One row's ``<masks> <crc>`` payload as ``uint64 (cols,)``, checksum verified."""
        text, _, crc = payload.rpartition(" ")
        try:
            values = np.array([int(item, 16) for item in text.split(",")], dtype=np.uint64)
            valid = int(crc, 16) == crc16_ccitt(text) and len(values) == self._geometry[1]
        except ValueError:
            valid = False
        if not valid:
            raise ProtocolError(f"bad row read-back {payload[:60]!r}", address=self.address, command=command)
        return values

    def read_rows(self, rows: list[int]) -> np.ndarray:
        """Several rows' masks, ``uint64 (len(rows), cols)``, each checksum verified: ``ROWS?``
        lines of at most :data:`LINE_BYTES` of reply on a board listing ``BATCH``, else a ``ROW?`` each."""
        rows = [check_int("row", row, 0, self._geometry[0] - 1) for row in rows]
        if not self.has_batch or len(rows) == 1:
            return np.stack([self.read_row(row) for row in rows])
        _, cols, branches = self._geometry
        per_line = max(1, LINE_BYTES // (cols * (-(-branches // 4) + 1) + 6))  # a row's reply at most
        found = []
        for start in range(0, len(rows), per_line):
            command = "ROWS? " + ",".join(str(row) for row in rows[start:start + per_line])
            payloads = self._command(command).split(";")
            if len(payloads) != len(rows[start:start + per_line]):
                raise ProtocolError(f"expected {len(rows[start:start + per_line])} rows, got {len(payloads)}",
                                    address=self.address, command=command[:40])
            found += [self._row_masks(payload, command[:40]) for payload in payloads]
        return np.stack(found)

    def read_masks(self) -> np.ndarray:
        """Every row's masks, ``uint64 (rows, cols)`` (:meth:`read_rows`)."""
        masks = self.read_rows(list(range(self._geometry[0])))
        self._masks = masks.copy()
        self.version += 1
        return masks

    def known_masks(self) -> np.ndarray:
        """The masks the board holds, read once and then tracked, ``uint64 (rows, cols)``."""
        if self._masks is None:
            self.read_masks()
        return self._masks.copy()

    def load_masks(self, masks: object) -> int:
        """Load a whole array of masks, sending only the rows that differ from the board's.

        Parameters
        ----------
        masks : array_like of int, shape (rows, cols)

        Returns
        -------
        int
            How many rows were sent.
        """
        rows, cols, _ = self._geometry
        values = self._check_masks(masks, (rows, cols))
        current = self.known_masks()
        changed = [row for row in range(rows) if not np.array_equal(current[row], values[row])]
        if changed:
            self._load(changed, values[changed])
            self._verify(changed, values[changed])  # every row loaded, read back (ROWS?: at once)
            self.settle()
        return len(changed)

    # ---- routing -------------------------------------------------------------------------------
    def _line(self, name: str, index: int | str, size: int) -> str:
        if index == "*":
            return "*"
        return str(check_int(name, index, 0, size - 1))

    def route_row(self, row: int | str, route: str) -> None:
        """``ROUTE ROW <r|*> <SRC|GND|FLOAT>``: to the SMU's HI, to ground, or open."""
        line = self._line("row", row, self._geometry[0])
        mode = check_choice("row route", route, ROW_ROUTES)
        self._command(f"ROUTE ROW {line} {mode}")
        self.version += 1
        self.route_version += 1

    def route_col(self, col: int | str, route: str) -> None:
        """``ROUTE COL <c|*> <SENSE|GND|FLOAT>``: to the SMU's LO (sense), to ground, or open."""
        line = self._line("col", col, self._geometry[1])
        mode = check_choice("col route", route, COL_ROUTES)
        self._command(f"ROUTE COL {line} {mode}")
        self.version += 1
        self.route_version += 1

    def row_route(self, row: int) -> str:
        """``ROUTE? ROW <r>``."""
        return self._command(f"ROUTE? ROW {self._line('row', row, self._geometry[0])}")

    def col_route(self, col: int) -> str:
        """``ROUTE? COL <c>``."""
        return self._command(f"ROUTE? COL {self._line('col', col, self._geometry[1])}")

    def safe(self) -> None:
        """``SAFE``: every branch open, every line to ground, every DAC at 0 V."""
        self._command("SAFE")
        self._became_safe()
        self.settle()

    def _became_safe(self) -> None:
        rows, cols, _ = self._geometry
        zeros = np.zeros((rows, cols), dtype=np.uint64)
        self._count_switches(self._masks, zeros)
        self._masks = zeros
        self.version += 1
        self.route_version += 1

    # ---- readout (boards with MVM) -----------------------------------------------------------------
    def dac_max_v(self) -> float:
        """``DACMAX?``: the largest |V| a row DAC produces (read once)."""
        if self._dac_max_v is None:
            self._dac_max_v = self._number("DACMAX?")
        return self._dac_max_v

    def dac_lsb_v(self) -> float | None:
        """``DACBITS?``: the row DACs' step, ``DACMAX? / 2**(bits - 1)``, V (read once); None for a
        DAC that is not quantized (``0``)."""
        if self._dac_bits is None:
            self._dac_bits = int(self._number("DACBITS?"))
        return self.dac_max_v() / 2.0 ** (self._dac_bits - 1) if self._dac_bits > 0 else None

    def set_adc_range_a(self, current_a: float) -> None:
        """``ADCRANGE <amps>``: full-scale current of the column ADCs."""
        value = check_number("adc_range_a", current_a, 1e-12, 1.0)
        self._command(f"ADCRANGE {format_number(value)}")

    def adc_range_a(self) -> float:
        """``ADCRANGE?``."""
        return self._number("ADCRANGE?")

    def set_adc_nplc(self, nplc: float) -> None:
        """``ADCNPLC <n>``: ADC integration time in power-line cycles, 0.01..10."""
        value = check_number("nplc", nplc, 0.01, 10.0)
        self._command(f"ADCNPLC {format_number(value)}")
        self._nplc = value

    def adc_nplc(self) -> float:
        """``ADCNPLC?``."""
        self._nplc = self._number("ADCNPLC?")
        return self._nplc

    def conductance_bound_s(self) -> np.ndarray:
        """Upper bound of each row's conductance to the columns, S: the cells' calibrated
        conductance times :data:`BOUND_MARGIN` while a declaration :meth:`declare_cell_conductance_s`
        checked for the masks and routes now set is in force, else closed branches / R_min."""
        if self._in_force and self._declared is not None and self._declared[0] == self.version:
            return self._declared[1]
        return self._closed_bound_s()

    def _closed_bound_s(self) -> np.ndarray:
        """Closed branches of each row / R_min, S (the bound the lab's declaration gives)."""
        if self._bound is None or self._bound[0] != self.version:
            self._bound = (self.version, self._closed(self.known_masks()).sum(axis=1) / self.guard.min_resistance_ohm)
        return self._bound[1]

    def _closed(self, masks: np.ndarray) -> np.ndarray:
        """Closed branches of every cell, ``(rows, cols)``."""
        closed = np.zeros(masks.shape)
        for bit in range(self._geometry[2]):
            closed += (masks >> np.uint64(bit)) & np.uint64(1)
        return closed

    def declare_cell_conductance_s(self, cell_s: np.ndarray) -> np.ndarray:
        """Bound the total current by the cells' calibrated conductance, once a measurement agrees.

        Parameters
        ----------
        cell_s : ndarray (rows, cols)
            The conductance of every cell with the masks now loaded, S, as calibrated (0 or NaN:
            not declared; such a cell keeps its closed branches over ``min_resistance_ohm``).

        Until :meth:`release_declared` or the masks or routes change, :meth:`conductance_bound_s`
        is each row's declared sum (the larger of it and the measured one) times
        :data:`BOUND_MARGIN` (declaring the same cells again for the same masks measures nothing). The measurement: one
        ``MVM`` per row with a closed branch, that row alone at :data:`PROBE_FRACTION` of the
        voltage the closed-branch bound allows it (its total current, and each column within 0.9
        of the ADC range), less one all-zero reading (the channels' offsets, the DACs' zero-code
        error); the sum of its columns' ``|I|`` per volt (below the row's own current: some of it
        returns through the other rows). A board without ``MVM`` keeps the closed-branch bound.

        Returns
        -------
        ndarray (rows,)
            The bound now in force, S.

        Raises
        ------
        LimitError
            A row conducts more than its declared cells times :data:`BOUND_MARGIN`, or a column
            overflowed: a short since calibration, or cells of other masks. Nothing further is
            read and the closed-branch bound stays.
        """
        if not self.has_readout:
            return self.conductance_bound_s()
        rows, cols, _ = self._geometry
        cell = np.asarray(cell_s, dtype=np.float64)
        if cell.shape != (rows, cols):
            raise LimitError("cell_s", np.nan, rows * cols, f"expected shape ({rows}, {cols}), got {cell.shape}")
        version = self.version
        if self._declared is not None and self._declared[0] == version and np.array_equal(self._declared[2], cell):
            self._in_force = True  # checked already for these masks
            return self._declared[1]
        closed = self._closed(self.known_masks())
        bound = self._closed_bound_s()
        declared = np.isfinite(cell) & (cell > 0)
        row_s = np.where(declared, cell, closed / self.guard.min_resistance_ohm).sum(axis=1)
        limits = self.guard.limits
        with np.errstate(divide="ignore"):
            probe_v = PROBE_FRACTION * np.minimum.reduce([
                np.full(rows, min(limits.max_voltage_v, self.dac_max_v())),
                0.9 * limits.max_total_current_a / bound,
                0.9 * self.adc_range_a() * self.guard.min_resistance_ohm / np.max(closed, axis=1),
            ])
        self._declared, self._in_force = None, False  # the probes are checked against the closed-branch bound
        zero = self.mvm(np.zeros(rows))
        self.bound_readings += 1
        measured = np.zeros(rows)
        for row in np.flatnonzero(bound > 0):
            voltage = np.zeros(rows)
            voltage[row] = probe_v[row]
            measured[row] = np.sum(np.abs(self.mvm(voltage) - zero)) / probe_v[row]
            self.bound_readings += 1
            if not measured[row] <= BOUND_MARGIN * row_s[row]:  # NaN: a column overflowed
                seen = "a column overflowed" if np.isnan(measured[row]) else f"{measured[row]:.4g} S"
                raise LimitError("cell_s", measured[row], BOUND_MARGIN * row_s[row],
                                 f"row {row} conducts more than its cells were calibrated at ({seen}): "
                                 "a short since calibration? recalibrate")
        self._declared, self._in_force = (version, BOUND_MARGIN * np.maximum(row_s, measured), cell.copy()), True
        return self._declared[1]

    def release_declared(self) -> None:
        """Back to the closed-branch bound (the declaration stays checked for its masks)."""
        self._in_force = False

    def mvm(self, voltage_v: object) -> np.ndarray:
        """``MVM <v0>,...``: drive every row, return every column's current.

        A batch goes out as few ``MVMB`` lines as :data:`LINE_BYTES` allows on a board listing
        ``BATCH``, else one ``MVM`` line per vector; the board reads the vectors in turn either way.

        Parameters
        ----------
        voltage_v : array_like, shape (rows,) or (batch, rows)
            Row voltages, volts; within ``max_voltage_v``, the DAC range and the power and total
            current limits (every vector checked before the first is sent).

        Returns
        -------
        current_a : ndarray, shape (cols,) or (batch, cols)
            Column currents, amperes; a column beyond the ADC range reads NaN.
        """
        return self._read("MVM", voltage_v, self._geometry[1])

    def mvm_pairs(self, voltage_v: object) -> np.ndarray:
        """``MVMD <v0>,...``: drive every row, return each column pair's difference current.

        Parameters
        ----------
        voltage_v : array_like, shape (rows,) or (batch, rows)
            Row voltages, volts, checked and batched (``MVMDB``) as for :meth:`mvm`.

        Returns
        -------
        current_a : ndarray, shape (cols // 2,) or (batch, cols // 2)
            ``I[2o] - I[2o + 1]`` through pair ``o``'s difference channel, amperes (NaN on overflow).

        Raises
        ------
        LimitError
            The board has no difference channels (``DIFF`` not in ``CAP?``); nothing is sent.
        """
        if not self.has_differential:
            raise LimitError("differential", 0, 1, f"the board at {self.address} has no DIFF capability")
        return self._read("MVMD", voltage_v, self._geometry[1] // 2)

    def _read(self, name: str, voltage_v: object, count: int) -> np.ndarray:
        """Readout lines (``MVM`` or ``MVMD``, batched as ``MVMB``, ``MVMDB``): limits checked for
        every vector before sending, ``count`` currents back per vector."""
        rows = self._geometry[0]
        values = self.guard.voltages_v(voltage_v)
        batch = np.atleast_2d(values)
        if values.ndim > 2 or batch.shape[1] != rows:
            raise LimitError("voltage_v", np.nan, rows, f"expected shape ({rows},) or (batch, {rows}), "
                             f"got {values.shape}")
        dac_max = self.dac_max_v()
        peak = float(np.max(np.abs(batch)))
        if peak > dac_max:
            raise LimitError("dac_max_v", peak, dac_max, "the board's DAC range")
        self.guard.total_current_a(batch, self.conductance_bound_s())
        texts = [",".join(format_number(value) for value in vector) for vector in batch]
        lines = _batched(name + "B", texts) if self.has_batch and len(texts) > 1 else [
            (f"{name} {text}", 1) for text in texts]
        current = np.concatenate([self._currents(*line, count) for line in lines])
        current[np.abs(current) >= OVERFLOW] = np.nan
        return current if values.ndim == 2 else current[0]

    def _currents(self, command: str, vectors: int, count: int) -> np.ndarray:
        """The ``(vectors, count)`` currents of one readout line (a batch waits as long as its
        integrations and its bytes at 115200 baud may take, twice over, beyond the timeout)."""
        if vectors == 1:
            payload = self._command(command)
        else:
            nplc = self._nplc if self._nplc is not None else self.adc_nplc()
            wire_bytes = len(command) + vectors * count * _REPLY_BYTES_PER_VALUE
            with self.transport.patience(vectors * nplc * _BATCH_SECONDS_PER_VECTOR_PLC
                                         + wire_bytes * _BATCH_SECONDS_PER_BYTE):
                payload = self._command(command)
        try:
            current = np.array([[float(item) for item in vector.split(",")] for vector in payload.split(";")])
        except ValueError:
            raise ProtocolError(f"expected {count} numbers, got {payload[:60]!r}", address=self.address,
                                command=command[:40] + "...") from None
        if current.shape != (vectors, count):
            raise ProtocolError(f"expected {vectors} x {count} currents, got {current.size}", address=self.address,
                                command=command[:40] + "...")
        return current

    def close(self) -> None:
        """Close the transport."""
        self.transport.close()


def _groups(sizes: list[int], budget: int) -> list[slice]:
    """Consecutive groups of items whose ``sizes`` (bytes, a separator included) add up to at most
    ``budget``; an item alone always makes a group."""
    groups, start, used = [], 0, 0
    for k, size in enumerate(sizes):
        if k > start and used + size > budget:
            groups.append(slice(start, k))
            start, used = k, 0
        used += size
    return [*groups, slice(start, len(sizes))]


def _batched(name: str, texts: list[str]) -> list[tuple[str, int]]:
    """``(line, vectors)`` of ``name`` lines carrying ``texts`` joined by ``;``, each within
    :data:`LINE_BYTES` (a vector alone always fits: ``MVM`` takes a line too)."""
    groups = _groups([len(text) + 1 for text in texts], LINE_BYTES - len(name) - 1)  # the space; ";" or "\n" each
    return [(f"{name} " + ";".join(texts[group]), group.stop - group.start) for group in groups]
