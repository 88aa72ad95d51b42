"""Batch APIs passed through the gateway (OpenAI `/v1/files` + `/v1/batches`, Anthropic
`/v1/messages/batches`), each result line recorded as a ledger event at the batch price, and
the deferral lane that sends calls which can wait as batches (`spendgate.batches.lane`)."""
