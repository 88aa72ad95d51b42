"""The public API is pinned, as httpx pins its own: what `import spendgate` offers library
users, and the one root of every error spendgate raises on purpose."""

from __future__ import annotations

import subprocess
import sys

import spendgate


def test_public_names() -> None:
    assert spendgate.__all__ == [
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
    for name in spendgate.__all__:
        assert getattr(spendgate, name) is not None, name
    from spendgate.library import SpendgateTransport

    assert spendgate.SpendgateTransport is SpendgateTransport


def test_every_error_is_a_spendgate_error() -> None:
    from spendgate.budgets.store import StoreUnavailable
    from spendgate.config import ConfigError
    from spendgate.ledger import InvalidEvent
    from spendgate.pricing import PriceFileError
    from spendgate.providers.base import UpstreamError
    from spendgate.providers.translate import TranslationError
    from spendgate.serve import ServeError
    from spendgate.trim.history import SummaryError

    errors = (spendgate.GatewayError, ConfigError, InvalidEvent, PriceFileError, UpstreamError,
              TranslationError, ServeError, SummaryError, StoreUnavailable)  # fmt: skip
    for error in errors:
        assert issubclass(error, spendgate.SpendgateError), error
    for value_error in (ConfigError, InvalidEvent, PriceFileError, TranslationError):
        assert issubclass(value_error, ValueError)


def test_import_stays_light() -> None:
    """`import spendgate` must not pull the gateway in (the transports load on first use)."""
    code = "import sys, spendgate; print('spendgate.server.app' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
