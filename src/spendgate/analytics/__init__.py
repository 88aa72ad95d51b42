"""Analytics over the ledger: reports, unit economics, feature economics, trends."""
