"""The agency's key file and event completion behind ``accord keys agency-keypair`` and
``accord publish`` (pure logic; publishing itself runs in tests/integration/test_quickstart.py)."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.agency_client import (
    PublishError,
    complete,
    load_signing_key,
    new_signing_key_file,
    read_event,
)
from services.events import provenance


def test_key_file_is_0600_never_overwritten_and_signs_for_the_printed_key(tmp_path: Path) -> None:
    path = tmp_path / "agency.key"
    public = new_signing_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        new_signing_key_file(path)
    signed = provenance.sign_event({"id": "e1", "data": {}}, load_signing_key(path))
    assert provenance.verify_event(signed, public)


@pytest.mark.parametrize("text", ["not base64!", "QUJD"])
def test_a_bad_key_file_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.key"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"bad\.key"):
        load_signing_key(path)


def test_complete_fills_only_what_is_missing() -> None:
    now = datetime(2099, 1, 2, 3, 4, 5, tzinfo=UTC)
    filled = complete({"type": "t", "source": "/agencies/a"}, now=now)
    assert filled["specversion"] == "1.0"
    assert filled["time"] == now.isoformat()
    assert filled["id"].startswith("evt-")
    assert complete({"type": "t"})["id"] != complete({"type": "t"})["id"]
    given = {"specversion": "1.0", "id": "mine", "time": "2026-01-01T00:00:00Z", "type": "t"}
    assert complete(given, now=now) == given


def test_read_event_names_what_is_missing_never_the_content(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps({"source": "/agencies/a", "type": "t", "data": {"x": "secret"}}))
    with pytest.raises(PublishError, match="'subject'") as exc:
        read_event(path)
    assert "secret" not in str(exc.value)
    path.write_text("[1, 2]")
    with pytest.raises(PublishError, match="JSON object"):
        read_event(path)
    path.write_text("{nope")
    with pytest.raises(PublishError, match="not JSON"):
        read_event(path)
