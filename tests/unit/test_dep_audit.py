"""The decisions of the fallback dependency audit (tools/dep_audit.py), on fabricated PyPI
project documents: no network."""

from __future__ import annotations

import urllib.error
from email.message import Message
from typing import Any

import pytest

from tools import dep_audit
from tools.dep_audit import Document, assess, audit, control_ok, report

ADVISORY = {
    "id": "PYSEC-2099-1",
    "aliases": ["CVE-2099-0001", "GHSA-xxxx-yyyy-zzzz"],
    "fixed_in": ["2.0.1"],
    "link": "https://osv.dev/vulnerability/PYSEC-2099-1",
    "withdrawn": None,
}


def project(latest: str, vulns: list[dict[str, Any]] | None, **releases: Any) -> Document:
    doc: Document = {"info": {"version": latest}, "releases": releases or {latest: [{}]}}
    if vulns is not None:
        doc["vulnerabilities"] = vulns
    return doc


def test_latest_release_with_an_advisory_is_vulnerable() -> None:
    result = assess("libx", "2.0.0", project("2.0.0", [ADVISORY]))
    assert result.checked and result.vulnerable
    (vuln,) = result.vulnerabilities
    assert vuln.id == "PYSEC-2099-1" and vuln.fixed_in == ("2.0.1",)
    assert "CVE-2099-0001" in vuln.describe() and "fixed in 2.0.1" in vuln.describe()


def test_latest_release_without_advisories_is_checked_and_clean() -> None:
    result = assess("libx", "2.0", project("2.0.0", []))  # 2.0 == 2.0.0 as versions
    assert result.checked and not result.vulnerable


def test_an_older_release_is_never_judged_by_the_latest_releases_list() -> None:
    clean_latest = assess("libx", "1.9.0", project("2.0.0", []))
    vulnerable_latest = assess("libx", "1.9.0", project("2.0.0", [ADVISORY]))
    for result in (clean_latest, vulnerable_latest):
        assert not result.checked and not result.vulnerable
        assert "latest release is 2.0.0" in result.reason


def test_withdrawn_advisories_and_aliases_of_kept_ones_do_not_count_twice() -> None:
    withdrawn = {**ADVISORY, "id": "PYSEC-2099-2", "aliases": [], "withdrawn": "2099-02-01"}
    alias = {**ADVISORY, "id": "GHSA-xxxx-yyyy-zzzz", "aliases": ["CVE-2099-0001"]}
    result = assess("libx", "2.0.0", project("2.0.0", [ADVISORY, alias, withdrawn]))
    assert [v.id for v in result.vulnerabilities] == ["PYSEC-2099-1"]
    only_withdrawn = assess("libx", "2.0.0", project("2.0.0", [withdrawn]))
    assert only_withdrawn.checked and not only_withdrawn.vulnerable


def test_a_document_without_the_vulnerabilities_key_checks_nothing() -> None:
    result = assess("libx", "2.0.0", project("2.0.0", None))
    assert not result.checked and "no 'vulnerabilities' list" in result.reason


def test_yanked_installed_release_is_noted() -> None:
    doc = project("2.0.0", [], **{"1.0": [{"yanked": True, "yanked_reason": "broken"}]})
    assert assess("libx", "1.0", doc).yanked == "broken"


def fake_fetch(docs: dict[str, Document]) -> dep_audit.Fetch:
    def fetch(name: str) -> Document:
        if name not in docs:
            raise urllib.error.HTTPError(f"https://pypi.test/{name}", 404, "nf", Message(), None)
        return docs[name]

    return fetch


def test_report_fails_on_a_vulnerability_and_lists_what_was_not_checked() -> None:
    fetch = fake_fetch(
        {
            "clean": project("1.0", []),
            "bad": project("2.0.0", [ADVISORY]),
            "old": project("3.0", []),
        }
    )
    deps = [("clean", "1.0"), ("bad", "2.0.0"), ("old", "2.5"), ("private", "0.1")]
    out = report(audit(deps, fetch), "control", require_complete=False)
    text = "\n".join(out.lines)
    assert out.code == 1
    assert "2 of 4 installed distributions checked" in text
    assert "1 with a known vulnerability" in text
    assert "VULNERABLE: bad 2.0.0" in text and "PYSEC-2099-1" in text
    assert "old 2.5: latest release is 3.0" in text
    assert "private 0.1: not on PyPI" in text


@pytest.mark.parametrize(("require_complete", "code"), [(False, 0), (True, 1)])
def test_unchecked_distributions_fail_only_when_a_complete_audit_is_required(
    require_complete: bool, code: int
) -> None:
    fetch = fake_fetch({"clean": project("1.0", []), "old": project("3.0", [])})
    results = audit([("clean", "1.0"), ("old", "2.5")], fetch)
    assert report(results, "control", require_complete).code == code
    all_clean = audit([("clean", "1.0")], fetch)
    assert report(all_clean, "control", require_complete).code == 0


def test_control_rejects_a_service_without_vulnerability_data() -> None:
    stripped = fake_fetch({"pycrypto": project("2.6.1", [])})
    missing = fake_fetch({"pycrypto": project("2.6.1", None)})
    down = fake_fetch({})
    good = fake_fetch({"pycrypto": project("2.6.1", [ADVISORY])})
    assert not control_ok(stripped)[0]
    assert not control_ok(missing)[0]
    assert not control_ok(down)[0]
    assert control_ok(good) == (True, "pycrypto 2.6.1 lists PYSEC-2099-1")
