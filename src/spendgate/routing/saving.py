"""What routing saved on one call, credited by the route stage itself.

Routing saved what the requested model would have cost on the same usage and service tier,
minus what the served model cost (negative when routing up). It is computed when the reply
completes (the usage is known only then), from the reply's actual cost as the ledger will
record it. A leaf module so the deferral lane, which completes a deferred call restored
after a restart (no stage callbacks left), credits it the same way."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendgate.call import Call
from spendgate.pricing import billed_tier
from spendgate.reply import Reply

if TYPE_CHECKING:
    from spendgate.accounting import Accountant

__all__ = ["credit_routing"]


def credit_routing(accountant: Accountant, call: Call, reply: Reply) -> None:
    """Set `call.savings["routing"]` for a call served by another model than requested
    (once: a cascade's side calls set their own)."""
    if call.model == call.requested_model or "routing" in call.savings:
        return
    cost = accountant.price(call, reply)  # priced once; the ledger reads the same cost
    usage = reply.usage
    if cost is None or usage is None:
        return
    tier = billed_tier(call, reply)
    requested = accountant.pricer.total(call.requested_model, usage, service_tier=tier)
    if requested is not None:
        call.savings["routing"] = requested - cost.total
