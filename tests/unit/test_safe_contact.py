"""Safe-contact pure logic: the gate's routing and safe times, consent to share contact data,
time-limited consent (docs/safe-contact.md). The outbox itself: tests/integration/
test_safe_contact.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.consent.schemas import ConsentIn
from services.consent.time_limits import ends_at, time_limited
from services.contact.gate import ERASED, next_safe_time, route
from services.contact.schemas import Channel, ContactPreferenceIn
from services.contact.service import may_share_contact
from services.policy_data import ConsentLimits, consent_limits
from services.settings import REPO_ROOT

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def pref(**over: Any) -> ContactPreferenceIn:
    doc: dict[str, Any] = {
        "channels": ["sms", "phone_call"],
        "safe_times": [{"days": WEEKDAYS, "start": "10:00", "end": "14:00"}],
        "time_zone": "America/Chicago",
        "code_word": "bluebird",
    }
    return ContactPreferenceIn.model_validate({**doc, **over})


# Wednesday 2 December 2026; Chicago is UTC-6 in winter.
WED_NOON_CHICAGO = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)


def test_inside_a_safe_window_a_notice_is_sent_on_the_first_channel() -> None:
    r = route(pref(), WED_NOON_CHICAGO)
    assert (r.action, r.channel) == ("send", Channel.SMS)


def test_outside_the_safe_times_it_is_held_until_the_next_window_starts() -> None:
    evening = datetime(2026, 12, 2, 23, 0, tzinfo=UTC)  # 17:00 in Chicago
    r = route(pref(), evening)
    assert r.action == "hold"
    assert r.until == datetime(2026, 12, 3, 16, 0, tzinfo=UTC)  # Thursday 10:00 local


def test_friday_evening_is_held_until_monday() -> None:
    friday_evening = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)  # Fri 19:00 local
    assert next_safe_time(pref(), friday_evening) == datetime(2026, 12, 7, 16, 0, tzinfo=UTC)


def test_safe_times_follow_daylight_saving_time() -> None:
    # 8 March 2026 Chicago moves to UTC-5: Monday 9 March 10:00 local is 15:00 UTC.
    sunday = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert next_safe_time(pref(), sunday) == datetime(2026, 3, 9, 15, 0, tzinfo=UTC)


def test_no_safe_times_means_any_time() -> None:
    assert route(pref(safe_times=[]), WED_NOON_CHICAGO).action == "send"


def test_do_not_contact_is_suppressed_whatever_the_time() -> None:
    for hour in range(0, 24):
        at = datetime(2026, 12, 2, hour, tzinfo=UTC)
        r = route(pref(do_not_contact=True), at)
        assert (r.action, r.reason) == ("suppress", "do_not_contact")


def test_an_erased_preference_is_suppressed_and_none_recorded_is_sent() -> None:
    assert route(ERASED, WED_NOON_CHICAGO).action == "suppress"
    r = route(None, WED_NOON_CHICAGO)
    assert (r.action, r.channel, r.reason) == ("send", None, "no_preference")


@pytest.mark.parametrize(
    "bad",
    [
        {"channels": []},  # neither a channel nor do_not_contact
        {"time_zone": "Mars/Olympus"},
        {"channels": ["sms", "sms"]},
        {"safe_times": [{"days": ["mon"], "start": "22:00", "end": "02:00"}]},
        {"channels": ["carrier_pigeon"]},
    ],
)
def test_a_preference_that_cannot_be_honoured_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        pref(**bad)
    for e in info.value.errors():  # no echo: what was sent is not in the message
        assert "Mars" not in e["msg"] and "pigeon" not in e["msg"]


# --- consent to share contact data ---------------------------------------------------------

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def consent(*provisions: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "id": "c-1",
        "version": 1,
        "status": "active",
        "recorded_by": {"role": "self", "suspect": False},
        "provisions": list(provisions),
        **over,
    }


def provision(kind: str = "permit", **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": kind,
        "recipients": {"partners": [], "partner_types": ["shelter"]},
        "purposes": ["service_referral"],
        "categories": ["contact"],
        "period": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
    }
    return {**doc, **over}


def share(consents: list[dict[str, Any]], **over: Any) -> bool:
    args: dict[str, Any] = {
        "partner_id": "lighthouse-shelter",
        "partner_type": "shelter",
        "purpose": "service_referral",
        "now": NOW,
    }
    return may_share_contact(consents, **{**args, **over})


def test_contact_is_shared_only_under_a_live_permit_covering_it() -> None:
    assert share([consent(provision())])
    assert share([consent(provision(categories=["*"]))])  # contact is not sensitive (R10)
    assert not share([])
    assert not share([consent(provision(categories=["identity"]))])
    assert not share([consent(provision())], partner_type="health")
    assert not share([consent(provision())], purpose="care_coordination")
    expired = {"start": "2026-01-01T00:00:00Z", "end": "2026-06-01T00:00:00Z"}
    assert not share([consent(provision(period=expired))])
    assert not share([consent(provision(), status="revoked")])


def test_a_deny_beats_the_permit_and_a_suspect_guardian_counts_for_nothing() -> None:
    deny = provision("deny", recipients={"partners": [], "partner_types": ["*"]}, purposes=["*"])
    assert not share([consent(provision()), consent(deny, id="c-2")])
    suspect = {"role": "guardian", "suspect": True}
    assert not share([consent(provision(), recorded_by=suspect)])


def test_a_restricted_recipient_needs_a_permit_that_names_it() -> None:
    starred = provision(recipients={"partners": [], "partner_types": ["*"]})
    assert share([consent(starred)], partner_type="law_enforcement")
    assert not share(
        [consent(starred)], partner_type="law_enforcement", named_consent_required=True
    )
    named = provision(recipients={"partners": ["lighthouse-shelter"], "partner_types": []})
    assert share([consent(named)], named_consent_required=True)


# --- time-limited consent -------------------------------------------------------------------

LIMITS = ConsentLimits(max_duration=timedelta(days=365), renewal_notice=timedelta(days=30))


def grant(*periods: dict[str, Any], kind: str = "permit") -> ConsentIn:
    return ConsentIn.model_validate(
        {
            "provisions": [provision(kind, period=p) for p in periods],
            "evidence": {"kind": "form_reference", "reference": "form 1"},
        }
    )


def test_a_permit_without_an_end_or_beyond_the_maximum_is_capped() -> None:
    capped = time_limited(
        grant(
            {"start": "2026-01-01T00:00:00Z", "end": None},
            {"start": "2026-12-02T12:00:00Z", "end": "2030-01-01T00:00:00Z"},
            {"start": "2027-03-01T00:00:00Z", "end": None},
        ),
        now=NOW,
        limits=LIMITS,
    )
    ends = [p.period.end for p in capped.provisions]
    # A backdated start does not lengthen it: the year runs from when it was recorded.
    assert ends == [NOW + LIMITS.max_duration, NOW + LIMITS.max_duration,
                    datetime(2028, 2, 29, tzinfo=UTC)]  # fmt: skip


def test_a_permit_within_the_maximum_and_a_deny_are_left_as_they_are() -> None:
    short = {"start": "2026-12-01T00:00:00Z", "end": "2027-02-01T00:00:00Z"}
    data = grant(short)
    assert time_limited(data, now=NOW, limits=LIMITS) == data
    deny = grant({"start": "2026-12-01T00:00:00Z", "end": None}, kind="deny")
    assert time_limited(deny, now=NOW, limits=LIMITS) == deny


def test_the_limits_come_from_the_jurisdictions_policy_data() -> None:
    policies = REPO_ROOT / "policies"
    assert consent_limits(policies, "state-a") == LIMITS
    state_b = consent_limits(policies, "state-b")  # overrides the maximum only
    assert state_b == ConsentLimits(timedelta(days=180), timedelta(days=30))
    assert consent_limits(policies, "nowhere") == LIMITS  # the default


def test_a_consent_ends_when_its_last_permit_ends() -> None:
    from services.consent.schemas import Consent

    c = Consent.model_validate(
        {
            "id": "c-1",
            "survivor_id": "sv-1",
            "version": 1,
            "status": "active",
            "provisions": [
                provision(period={"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"}),
                provision(period={"start": "2026-01-01T00:00:00Z", "end": "2027-05-01T00:00:00Z"}),
                provision("deny", period={"start": "2026-01-01T00:00:00Z", "end": None}),
            ],
            "recorded_by": {"role": "self", "actor": "sv-1"},
            "evidence": None,
            "recorded_at": NOW,
        }
    )
    assert ends_at(c) == datetime(2027, 5, 1, tzinfo=UTC)
