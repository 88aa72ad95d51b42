"""Small shared records the gateway keeps between requests: stored Responses (for
`previous_response_id` and `GET /v1/responses/{id}`), batches and files passed through to a
provider, and calls waiting in the deferral lane. See `spendgate.state.store`."""

from spendgate.state.store import Record, StateStore, open_state, owner_of, state_url

__all__ = ["Record", "StateStore", "open_state", "owner_of", "state_url"]
