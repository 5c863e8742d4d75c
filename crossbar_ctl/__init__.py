"""crossbar-ctl: a hardware-in-the-loop controller for resistive crossbars.

This package holds the leaves (``errors``, ``config``, ``files``), the subset-sum optimizer, the
lab factory, the analog MVM engine and the ``crossbar`` command. It stays light on import: the
engine and the CLI load only when used, so ``drivers`` and ``calibration`` can import the leaves
without a cycle.
"""

__version__ = "0.1.0"
