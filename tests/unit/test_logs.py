"""The redaction processor: credentials never reach a log line."""

from servicenow_worker.logs import job_secret_values, redact


def test_sensitive_keys_are_masked_at_any_depth() -> None:
    """Fields named like credentials are masked, also nested in objects and lists."""
    event = {
        "event": "x",
        "password": "p",
        "headers": {"Authorization": "Basic abc", "Accept": "json"},
        "auth": [{"client_secret": "s", "x-sn-apikey": "k"}],
    }
    assert redact(None, "info", event) == {
        "event": "x",
        "password": "***",
        "headers": {"Authorization": "***", "Accept": "json"},
        "auth": [{"client_secret": "***", "x-sn-apikey": "***"}],
    }


def test_job_secret_values_masked_in_any_field() -> None:
    """A value the current job resolved from a secret is masked wherever it appears."""
    token = job_secret_values.set(frozenset({"hunter2", 'q"u\nö'}))
    try:
        event = {"event": "failed", "message": 'user x / hunter2 / q"u\nö'}
        assert redact(None, "info", event)["message"] == "user x / *** / ***"
    finally:
        job_secret_values.reset(token)
