"""The end of the pipeline: which deployments serve a model (`table`), how a call is sent
to them (`dispatcher`) and what happens when one fails (`resilience`).

Why its own package, beside `pipeline.py` rather than inside `routing/`: routing decides
*which model* should answer (a stage, before the prompt-cache and defer stages); the
dispatcher decides *which deployment* sends it and whether to try again. Retries, backoff
and circuit breakers serve only the dispatcher, so they live next to it. Nothing here
imports a stage: the stages and the dispatcher meet only in `spendgate.pipeline`.

The package itself imports nothing, so `from spendgate.dispatch.table import ModelTable`
(used by budgets and batches) stays light.
"""
