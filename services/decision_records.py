"""The decision records' shape on the decisions topic, shared by their writer (the relay,
``services/broker/pipeline/deliver.py``) and their readers (the audit sink, the demo, the
bench): one record per event, folded, ``decisions`` holding each partner's decision record
exactly as it would stand alone. A leaf module: it imports nothing of the project, so the
readers need not import the relay's package.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


def folded_record(event_id: str, docs: list[JSON]) -> JSON:
    """One record for all of an event's decisions (``split_decisions`` gives them back)."""
    return {"event_id": event_id, "decisions": docs}


def split_decisions(doc: JSON) -> list[JSON]:
    """The per-partner decision records a record of the decisions topic holds: those of a
    folded record, or the record itself if it is one partner's (written before folding)."""
    folded = doc.get("decisions") if isinstance(doc, dict) else None
    if isinstance(folded, list):
        return [d for d in folded if isinstance(d, dict)]
    return [doc] if isinstance(doc, dict) and "partner_id" in doc else []
