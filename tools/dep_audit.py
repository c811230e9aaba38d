"""Fallback dependency audit from PyPI's project-level JSON, for ``make audit-deps``.

deploy/audit-deps.sh runs pip-audit first (OSV, then PyPI's per-release JSON API). pip-audit
has no service that reads the project-level document, so where neither of its services answers
this module is the fallback. It reads ``https://pypi.org/pypi/<name>/json`` for each installed
distribution. PyPI documents the ``vulnerabilities`` array of that endpoint as "any known
vulnerabilities in the most recent release", and it is empty for a project whose older releases
have advisories (jinja2). So the data says something about an installed distribution **only if
its version is the project's latest release** (``info.version`` of the same document):

- installed version == latest: *checked*; every entry not withdrawn is a known vulnerability;
- any other version, a project not on PyPI, a fetch that fails, a document without the
  ``vulnerabilities`` key: *not checked*, each with its reason. The latest release's list says
  nothing about an older one in either direction, so it is never used for one.

Before anything, a positive control: pycrypto, whose latest release (2.6.1, of 2013) has
unfixed advisories, must come back with a non-empty list; otherwise the service is taken as
not carrying vulnerability data (a mirror that strips it) and the audit is unavailable.

    python -m tools.dep_audit [--require-complete]

Exit 0: no known vulnerability among the checked distributions (some may be unchecked, listed).
Exit 1: a known vulnerability was found; or, with ``--require-complete``, some distribution
could not be checked. Exit 2: the data source is unavailable (no result at all).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

PROJECT_URL = "https://pypi.org/pypi/{name}/json"
# Positive control: a project whose latest release has known, unfixed vulnerabilities.
CONTROL = "pycrypto"
TIMEOUT = 20.0

Document = dict[str, Any]
Fetch = Callable[[str], Document]


@dataclass(frozen=True)
class Vulnerability:
    id: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]
    link: str

    def describe(self) -> str:
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        fixed = f"fixed in {', '.join(self.fixed_in)}" if self.fixed_in else "no fixed release"
        return f"{self.id}{aliases}: {fixed}" + (f"; {self.link}" if self.link else "")


@dataclass(frozen=True)
class Result:
    name: str
    version: str
    latest: str | None
    checked: bool
    reason: str = ""  # why not checked
    vulnerabilities: tuple[Vulnerability, ...] = ()
    yanked: str | None = None  # the yanked reason if the installed release is yanked

    @property
    def vulnerable(self) -> bool:
        return bool(self.vulnerabilities)


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _yanked(doc: Document, version: str) -> str | None:
    for key, files in (doc.get("releases") or {}).items():
        if _same_version(key, version) and files and all(f.get("yanked") for f in files):
            return str(files[0].get("yanked_reason") or "no reason given")
    return None


def vulnerabilities_of(doc: Document) -> tuple[Vulnerability, ...] | None:
    """The document's known vulnerabilities, withdrawn ones left out and an entry that is an
    alias of one already kept (PYSEC and GHSA ids of one advisory) folded into it; None if the
    document has no list."""
    entries = doc.get("vulnerabilities")
    if not isinstance(entries, list):
        return None
    kept: list[Vulnerability] = []
    seen: set[str] = set()
    for e in entries:
        if e.get("withdrawn"):
            continue
        vuln = Vulnerability(
            id=str(e.get("id") or "unnamed"),
            aliases=tuple(str(a) for a in e.get("aliases") or ()),
            fixed_in=tuple(str(v) for v in e.get("fixed_in") or ()),
            link=str(e.get("link") or ""),
        )
        if vuln.id not in seen:
            kept.append(vuln)
            seen.update((vuln.id, *vuln.aliases))
    return tuple(kept)


def assess(name: str, version: str, doc: Document) -> Result:
    """What the project-level document ``doc`` says about ``name`` at the installed ``version``."""
    latest = str((doc.get("info") or {}).get("version") or "") or None
    yanked = _yanked(doc, version)
    if latest is None:
        return Result(name, version, None, False, "PyPI's document names no latest release")
    if not _same_version(version, latest):
        reason = (
            f"latest release is {latest}; PyPI's project JSON lists vulnerabilities "
            "for the latest release only"
        )
        return Result(name, version, latest, False, reason, yanked=yanked)
    vulns = vulnerabilities_of(doc)
    if vulns is None:
        reason = "PyPI's document has no 'vulnerabilities' list"
        return Result(name, version, latest, False, reason, yanked=yanked)
    return Result(name, version, latest, True, vulnerabilities=vulns, yanked=yanked)


def fetch_project(name: str) -> Document:
    url = PROJECT_URL.format(name=canonicalize_name(name))
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 (fixed https)
        doc: Document = json.load(response)
    return doc


def control_ok(fetch: Fetch) -> tuple[bool, str]:
    """Whether the service carries vulnerability data: the control project must list some."""
    try:
        doc = fetch(CONTROL)
    except Exception as exc:
        return False, f"{CONTROL}: {type(exc).__name__}: {exc}"
    result = assess(CONTROL, str((doc.get("info") or {}).get("version") or ""), doc)
    if not result.vulnerable:
        return False, f"{CONTROL}'s latest release comes back with no known vulnerability"
    ids = ", ".join(v.id for v in result.vulnerabilities[:2])
    return True, f"{CONTROL} {result.version} lists {ids}"


def audit(deps: Iterable[tuple[str, str]], fetch: Fetch) -> list[Result]:
    def one(dep: tuple[str, str]) -> Result:
        name, version = dep
        try:
            doc = fetch(name)
        except urllib.error.HTTPError as exc:
            why = "not on PyPI" if exc.code == 404 else f"HTTP {exc.code}"
            return Result(name, version, None, False, f"{why} ({PROJECT_URL.format(name=name)})")
        except Exception as exc:
            return Result(name, version, None, False, f"{type(exc).__name__}: {exc}")
        return assess(name, version, doc)

    with ThreadPoolExecutor(max_workers=6) as pool:
        return sorted(pool.map(one, deps), key=lambda r: canonicalize_name(r.name))


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    code: int = 0


def report(results: Sequence[Result], control: str, require_complete: bool) -> Report:
    out = Report()
    say = out.lines.append
    checked = [r for r in results if r.checked]
    unchecked = [r for r in results if not r.checked]
    vulnerable = [r for r in checked if r.vulnerable]
    say(
        "audit-deps: fallback: PyPI's project JSON (/pypi/<name>/json), whose 'vulnerabilities' "
        f"cover each project's latest release only (control: {control})"
    )
    say(
        f"audit-deps: {len(checked)} of {len(results)} installed distributions checked "
        f"(installed = latest release): {len(vulnerable)} with a known vulnerability"
    )
    for r in vulnerable:
        say(f"audit-deps: VULNERABLE: {r.name} {r.version}:")
        out.lines.extend(f"    {v.describe()}" for v in r.vulnerabilities)
    if unchecked:
        say(f"audit-deps: {len(unchecked)} NOT checked (no vulnerability data for them here):")
        out.lines.extend(f"    {r.name} {r.version}: {r.reason}" for r in unchecked)
    for r in results:
        if r.yanked:
            say(f"audit-deps: note: {r.name} {r.version} is yanked on PyPI: {r.yanked}")
    if vulnerable:
        out.code = 1
    elif unchecked and require_complete:
        say("audit-deps: --require-complete: some distributions could not be checked: failing")
        out.code = 1
    return out


def installed() -> list[tuple[str, str]]:
    """The environment's distributions as pip lists them (editable ones left out, as pip-audit
    --skip-editable does)."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format", "json", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [(d["name"], d["version"]) for d in json.loads(listing)]


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    require_complete = "--require-complete" in argv
    ok, control = control_ok(fetch_project)
    if not ok:
        print(f"audit-deps: PyPI project JSON unusable as vulnerability data: {control}")
        return 2
    out = report(audit(installed(), fetch_project), control, require_complete)
    print("\n".join(out.lines))
    return out.code


if __name__ == "__main__":
    sys.exit(main())
