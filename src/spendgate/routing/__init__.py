"""Model routing: rules, a learned router, calibration, multi-model choice, evaluation.

The stage (`spendgate.routing.stage`) decides per call which model serves it and records
the decision in `call.decisions["route"]`; accounting credits the saving when the served
model differs from the requested one.
"""

from spendgate.routing.routers import Router, get_router, load_router, register_router

__all__ = ["Router", "get_router", "load_router", "register_router"]
