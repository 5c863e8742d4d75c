"""The leaves every part imports: ``errors``, ``config``, ``files`` and ``circuit``.

Import the module you need (``from crossbar_ctl.core.errors import ConfigError``); this package
imports nothing itself, so ``drivers`` and ``calibration`` pay only for what they use.
"""
