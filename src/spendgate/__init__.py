"""spendgate: LLM spend made visible and smaller."""

from spendgate.call import Call, Cost, Tags, Usage

__all__ = ["Call", "Cost", "Tags", "Usage", "__version__"]
__version__ = "0.1.0"
