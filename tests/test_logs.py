"""Logs never carry secrets: structured keys are masked, and free text from servers is redacted."""

from __future__ import annotations

import io
import json

from fmos_mcp import logs


def test_secret_keys_are_masked_in_structured_logs() -> None:
    stream = io.StringIO()
    logs.configure("debug", stream=stream)
    logs.get("test").info("connecting", api_key="sk-live-123456", headers={"Authorization": "Bearer x"}, env={"A": "b"})
    event = json.loads(stream.getvalue().splitlines()[-1])
    assert event["api_key"] == "[redacted]"
    assert event["headers"] == {"Authorization": "[redacted]"} and event["env"] == {"A": "[redacted]"}
    logs.configure("warning")


def test_free_text_is_redacted() -> None:
    cases = {
        "Error: invalid api_key=sk-abcdefghijklmnop1234 given": "Error: invalid api_key=[redacted] given",
        "Authorization: Bearer abc.def.ghi123": "Authorization: Bearer [redacted]",
        'token "ghp_abcdefghijklmnopqrstuvwxyz0123"': 'token "[redacted]"',
        "aws key AKIAABCDEFGHIJKLMNOP": "aws key [redacted]",
        "listening on port 3001 in /usr/lib/node_modules/x": "listening on port 3001 in /usr/lib/node_modules/x",
    }
    for text, expected in cases.items():
        assert logs.redact_text(text) == expected
    assert logs.redact_text("the value hunter22 leaked", known=["hunter22"]) == "the value [redacted] leaked"


def test_url_credentials_and_query_strings_are_redacted() -> None:
    text = "failed for url 'http://user:pw1234@mcp.example/mcp?api_key=SUPERSECRET123&x=1' and https://h/p?t=abcdefgh"
    redacted = logs.redact_text(text)
    assert "SUPERSECRET123" not in redacted and "pw1234" not in redacted and "abcdefgh" not in redacted
    assert "http://[redacted]@mcp.example/mcp?[redacted]" in redacted
    assert logs.secrets_of(["https://u:passw0rd@h/mcp?key=k3y-value-1"]) == (
        "https://u:passw0rd@h/mcp?key=k3y-value-1", "u:passw0rd", "k3y-value-1")
