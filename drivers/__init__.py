"""Transports and instrument drivers by role.

Open a transport from a URI (:func:`open_transport`) and give it to a driver; code above the
drivers talks to roles, never to a model:

- ``SourceMeter``: :class:`Keithley2450`, :class:`Keithley2400`;
- ``SwitchMatrix``: :class:`KeysightE5250A`;
- ``SwitchBoard``: :class:`SwitchBoard` (docs/switchboard-protocol.md);
- ``ArrayReadout``: :class:`BoardReadout`, :class:`SuperpositionReadout`;
- :class:`Lab`: the roles of one lab, with limits and a safe state (``crossbar_ctl`` opens it).

Every value is checked against the lab's limits before a byte leaves (:class:`SafetyGuard`);
pyvisa and pyserial errors become :mod:`crossbar_ctl.core.errors` exceptions at the transport.
"""

from drivers._board import COL_ROUTES, ROW_ROUTES, SwitchBoard, crc16_ccitt
from drivers._lab import SOURCE_METER_MODELS, SWITCH_MATRIX_MODELS, Lab, build_lab
from drivers._matrix import KeysightE5250A, SwitchMatrix
from drivers._readout import ArrayReadout, BoardReadout, SuperpositionReadout
from drivers._routing import BoardRouting, MatrixRouting, Routing
from drivers._safety import DEFAULT_MIN_RESISTANCE_OHM, SafetyGuard, ramp_steps_v
from drivers._scpi import OVERFLOW, ScpiInstrument
from drivers._smu import Keithley2400, Keithley2450, SourceMeter
from drivers._transport import SerialTransport, SimTransport, Transport, VisaTransport, open_transport

__all__ = [
    "COL_ROUTES",
    "DEFAULT_MIN_RESISTANCE_OHM",
    "OVERFLOW",
    "ROW_ROUTES",
    "SOURCE_METER_MODELS",
    "SWITCH_MATRIX_MODELS",
    "ArrayReadout",
    "BoardReadout",
    "BoardRouting",
    "Keithley2400",
    "Keithley2450",
    "KeysightE5250A",
    "Lab",
    "MatrixRouting",
    "Routing",
    "SafetyGuard",
    "ScpiInstrument",
    "SerialTransport",
    "SimTransport",
    "SourceMeter",
    "SuperpositionReadout",
    "SwitchBoard",
    "SwitchMatrix",
    "Transport",
    "VisaTransport",
    "build_lab",
    "crc16_ccitt",
    "open_transport",
    "ramp_steps_v",
]
