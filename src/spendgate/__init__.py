"""spendgate: LLM spend made visible and smaller.

What a library user needs is importable from here; the gateway's internals live in the
subpackages. Names that pull in the whole gateway (the transports, settings loading) are
imported on first use, so `import spendgate` (and the CLI) stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from spendgate.call import Call, Cost, Tags, Usage
from spendgate.errors import GatewayError, SpendgateError

if TYPE_CHECKING:
    from spendgate.config import ConfigError, Settings, load_settings
    from spendgate.library import AsyncSpendgateTransport, SpendgateTransport

__all__ = [
    "AsyncSpendgateTransport",
    "Call",
    "ConfigError",
    "Cost",
    "GatewayError",
    "Settings",
    "SpendgateError",
    "SpendgateTransport",
    "Tags",
    "Usage",
    "__version__",
    "load_settings",
]
__version__ = "0.1.0"

_LAZY = {
    "AsyncSpendgateTransport": "spendgate.library",
    "SpendgateTransport": "spendgate.library",
    "ConfigError": "spendgate.config",
    "Settings": "spendgate.config",
    "load_settings": "spendgate.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spendgate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
