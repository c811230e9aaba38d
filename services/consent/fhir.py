"""A consent as a FHIR R4 ``Consent`` resource, and back. Pure functions, no I/O.

``to_fhir`` exports one consent version; ``from_fhir`` reads a FHIR R4 Consent into the grant
input (``ConsentIn``) or raises ``FhirRefused`` listing every construct Accord cannot honour,
each with its JSON path. Nothing is ever half-imported: either every element that carries
meaning is understood, or the whole resource is refused. The mapping, and how Accord's flat
list of provisions is nested into FHIR's provision tree and flattened back, is documented in
``docs/fhir-consent-mapping.md``.

Flattening (import): the root provision, and each nested provision, is a rule. A rule without
``type`` is allowed only at the root: it groups its nested rules (and may carry elements they
inherit) but is not itself a provision. Every typed rule becomes one Accord provision, in
document order (pre-order: a rule, then its nested rules). A nested rule inherits each element
it leaves out (actor, purpose, class/code, period) from its parent, and may only narrow what
it states: its recipients, purposes, categories and period must lie within the parent's, or
the resource is refused. A ``permit`` nested in a ``deny`` is refused: in Accord a deny always
beats a permit (R2), so such an exception cannot be honoured.

Re-nesting (export): provisions are taken in order; a deny that lies within the permit just
before it (or within the permit heading the run of denies it follows) is nested in that permit,
leaving out every element equal to the permit's; everything else becomes a rule of its own.
One resulting rule is the root; several are grouped under a root without ``type``. Pre-order
flattening of that tree gives back the same list in the same order, so export then import is
the identity.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from services.consent.schemas import (
    PARTNER_ID,
    PSEUDONYM,
    Consent,
    ConsentIn,
    Evidence,
    Period,
    Provision,
    Recipients,
    RecordedBy,
)
from services.vocabulary import ANY, SENSITIVE, Category, PartnerType, Purpose

ACCORD = "https://accord.example/fhir"
CATEGORY_SYSTEM = f"{ACCORD}/CodeSystem/data-category"
PURPOSE_SYSTEM = f"{ACCORD}/CodeSystem/purpose"
PARTNER_TYPE_SYSTEM = f"{ACCORD}/CodeSystem/partner-type"
STAFF_SYSTEM = f"{ACCORD}/NamingSystem/staff"
GUARDIAN_SYSTEM = f"{ACCORD}/NamingSystem/guardian"

CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
LOINC = "http://loinc.org"

MAX_DEPTH = 2  # root (0), its rules (1), their nested rules (2): three levels
GUARDIAN_REF = "#guardian"

_SCOPE = {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]}
_CATEGORY = {"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"}]}
_POLICY_RULE = {"coding": [{"system": ACT_CODE, "code": "OPTIN"}]}
_RECIPIENT_ROLE = {"coding": [{"system": PARTICIPATION, "code": "IRCP"}]}
_DISCLOSE = {"coding": [{"system": CONSENT_ACTION, "code": "disclose"}]}

# FHIR R4 consent-state-codes. Revoked and expired both end a consent: ``inactive``. The two
# are told apart by the provisions' periods (expired: every period has ended).
_STATUS = {"active": "active", "revoked": "inactive", "expired": "inactive"}
_R4_STATES = {"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"}
_ACCEPTED_CATEGORIES = {(LOINC, "59284-0"), (ACT_CODE, "IDSCL")}
_ACCEPTED_ACTIONS = {"access", "disclose"}

_R4_CONSENT = {
    "resourceType", "id", "meta", "implicitRules", "language", "text", "contained",
    "extension", "modifierExtension", "identifier", "status", "scope", "category", "patient",
    "dateTime", "performer", "organization", "sourceAttachment", "sourceReference", "policy",
    "policyRule", "verification", "provision",
}  # fmt: skip
_R5_CONSENT = {
    "subject", "date", "period", "grantor", "grantee", "manager", "controller",
    "regulatoryBasis", "policyBasis", "policyText", "decision",
}  # fmt: skip
_R4_PROVISION = {
    "id", "extension", "modifierExtension", "type", "period", "actor", "action",
    "securityLabel", "purpose", "class", "code", "dataPeriod", "data", "provision",
}  # fmt: skip
_R5_PROVISION = {"documentType", "resourceType", "expression"}

# Elements of the Consent that Accord cannot honour or keep: refused rather than dropped.
_REFUSED_CONSENT = {
    "implicitRules": "rules Accord does not know cannot be honoured",
    "extension": "extensions are not supported",
    "modifierExtension": "modifier extensions are not supported",
    "identifier": "Accord assigns the consent's id; business identifiers are not kept",
    "organization": "the consent is kept by the survivor's agency; a custodian is not kept",
    "policy": "Accord applies its own sharing rules; external policies cannot be honoured",
    "verification": "verification records are not kept; give the evidence as source instead",
}
_REFUSED_PROVISION = {
    "extension": "extensions are not supported",
    "modifierExtension": "modifier extensions are not supported",
    "securityLabel": "security labels are not supported",
    "dataPeriod": "a period of the data itself is not supported",
    "data": "data references are not supported",
}
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


class FhirRefused(ValueError):
    """A FHIR Consent Accord cannot honour; ``problems`` names every reason with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --- export --------------------------------------------------------------------------------


def _when(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _period(period: Period) -> dict[str, str]:
    out = {"start": _when(period.start)}
    if period.end is not None:
        out["end"] = _when(period.end)
    return out


def _actors(recipients: Recipients) -> list[dict[str, Any]]:
    partners = [{"reference": f"Organization/{p}"} for p in recipients.partners]
    types = [
        {"type": "Organization", "identifier": {"system": PARTNER_TYPE_SYSTEM, "value": str(t)}}
        for t in recipients.partner_types
    ]
    return [{"role": _RECIPIENT_ROLE, "reference": ref} for ref in partners + types]


def _rule(p: Provision, parent: Provision | None) -> dict[str, Any]:
    """One provision as a FHIR rule; elements equal to the parent's are left to inheritance."""
    rule: dict[str, Any] = {"type": p.type}
    if parent is None or p.period != parent.period:
        rule["period"] = _period(p.period)
    if parent is None or p.recipients != parent.recipients:
        rule["actor"] = _actors(p.recipients)
    if parent is None:
        rule["action"] = [_DISCLOSE]
    if parent is None or p.purposes != parent.purposes:
        rule["purpose"] = [{"system": PURPOSE_SYSTEM, "code": str(x)} for x in p.purposes]
    if parent is None or p.categories != parent.categories:
        rule["class"] = [{"system": CATEGORY_SYSTEM, "code": str(c)} for c in p.categories]
    return rule


def _within_purposes(child: list[str], parent: list[str]) -> bool:
    return ANY in parent or (ANY not in child and set(child) <= set(parent))


def _within_categories(child: list[str], parent: list[str]) -> bool:
    if ANY in parent:
        rest = set(parent) - {ANY}
        return all(c == ANY or c not in SENSITIVE or c in rest for c in child)
    return ANY not in child and set(child) <= set(parent)


def _within_recipients(child: Recipients, parent: Recipients) -> bool:
    if ANY in parent.partner_types:
        return True
    return ANY not in child.partner_types and (
        set(child.partner_types) <= set(parent.partner_types)
        and set(child.partners) <= set(parent.partners)
    )


def _within_period(child: Period, parent: Period) -> bool:
    if child.start < parent.start:
        return False
    return parent.end is None or (child.end is not None and child.end <= parent.end)


def _within(child: Provision, parent: Provision) -> bool:
    return (
        _within_recipients(child.recipients, parent.recipients)
        and _within_purposes(list(child.purposes), list(parent.purposes))
        and _within_categories(list(child.categories), list(parent.categories))
        and _within_period(child.period, parent.period)
    )


def nest(provisions: list[Provision]) -> list[tuple[Provision, list[Provision]]]:
    """Group each deny into the permit heading the run it follows, if it lies within it."""
    groups: list[tuple[Provision, list[Provision]]] = []
    for p in provisions:
        head = groups[-1][0] if groups else None
        if p.type == "deny" and head is not None and head.type == "permit" and _within(p, head):
            groups[-1][1].append(p)
        else:
            groups.append((p, []))
    return groups


def _performer(by: RecordedBy, pseudonym: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    if by.role == "self":
        return {"reference": f"Patient/{pseudonym}"}, None
    if by.role == "advocate":
        return {
            "type": "Practitioner",
            "identifier": {"system": STAFF_SYSTEM, "value": by.actor},
        }, None
    guardian: dict[str, Any] = {
        "resourceType": "RelatedPerson",
        "id": GUARDIAN_REF[1:],
        "identifier": [{"system": GUARDIAN_SYSTEM, "value": by.actor}],
        "patient": {"reference": f"Patient/{pseudonym}"},
    }
    if by.relation is not None:
        guardian["relationship"] = [{"text": by.relation}]
    return {"reference": GUARDIAN_REF}, guardian


def to_fhir(consent: Consent, pseudonym: str) -> dict[str, Any]:
    """One consent version (as the API returns it) as a FHIR R4 Consent resource.

    The survivor appears only as ``Patient/<pseudonym>``; no other identifier of theirs.
    """
    performer, contained = _performer(consent.recorded_by, pseudonym)
    groups = nest(list(consent.provisions))
    rules = [
        {**_rule(head, None), **({"provision": [_rule(d, head) for d in denies]} if denies else {})}
        for head, denies in groups
    ]
    root = rules[0] if len(rules) == 1 else {"provision": rules}
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "id": consent.id,
        "meta": {"versionId": str(consent.version)},
        "status": _STATUS[consent.status],
        "scope": _SCOPE,
        "category": [_CATEGORY],
        "patient": {"reference": f"Patient/{pseudonym}"},
        "dateTime": _when(consent.recorded_at),
        "performer": [performer],
        "policyRule": _POLICY_RULE,
        "provision": root,
    }
    if contained is not None:
        resource["contained"] = [contained]
    evidence = consent.evidence
    if evidence is None:  # erased with the survivor's data key: no source to give
        pass
    elif evidence.kind == "signed_statement":
        resource["sourceAttachment"] = {"title": evidence.reference}
    else:
        resource["sourceReference"] = {"display": evidence.reference}
    return resource


# --- import --------------------------------------------------------------------------------


class _Reader:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def refuse(self, path: str, why: str) -> None:
        self.problems.append(f"{path}: {why}")

    def keys(
        self,
        doc: dict[str, Any],
        path: str,
        allowed: set[str],
        *,
        what: str,
        r5: set[str] | None = None,
        refused: dict[str, str] | None = None,
    ) -> None:
        for key in doc:
            where = f"{path}.{key}" if path else key
            if refused and key in refused:
                self.refuse(where, refused[key])
            elif r5 and key in r5:
                self.refuse(where, "an element of FHIR R5, not R4; Accord reads FHIR R4")
            elif key not in allowed:
                # Named by where it is, not by its name: an unknown name is the sender's text.
                self.refuse(path or "(resource)", f"has an element that is not part of {what}")

    def obj(self, value: Any, path: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.refuse(path, "must be a JSON object")
        return None

    def array(self, value: Any, path: str) -> list[Any]:
        if isinstance(value, list):
            return value
        self.refuse(path, "must be a JSON array")
        return []

    def text(self, value: Any, path: str) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.refuse(path, "must be a non-empty string")
        return None

    def codings(self, concept: Any, path: str) -> list[tuple[str, str, str]]:
        """(system, code, path) of each coding of a CodeableConcept."""
        doc = self.obj(concept, path)
        if doc is None:
            return []
        self.keys(doc, path, {"coding", "text"}, what="a CodeableConcept")
        if "coding" not in doc:
            self.refuse(f"{path}.coding", "a code is required; text alone cannot be honoured")
            return []
        out = []
        for i, c in enumerate(self.array(doc["coding"], f"{path}.coding")):
            coding = self.coding(c, f"{path}.coding[{i}]")
            if coding is not None:
                out.append((*coding, f"{path}.coding[{i}]"))
        if not doc["coding"]:
            self.refuse(f"{path}.coding", "a code is required")
        return out

    def coding(self, value: Any, path: str) -> tuple[str, str] | None:
        doc = self.obj(value, path)
        if doc is None:
            return None
        self.keys(doc, path, {"system", "code", "display", "version"}, what="a Coding")
        system, code = doc.get("system"), doc.get("code")
        if not isinstance(system, str) or not isinstance(code, str):
            self.refuse(path, "needs both a system and a code")
            return None
        return system, code

    def when(self, value: Any, path: str) -> datetime | None:
        if not isinstance(value, str) or not _DATETIME.fullmatch(value):
            self.refuse(path, "give a date and time with a time zone (2026-01-01T00:00:00Z)")
            return None
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.refuse(path, "not a valid date and time")
            return None


# A rule's elements once read; None means "not stated" (inherited from the parent).
class _Scope:
    def __init__(self) -> None:
        self.recipients: Recipients | None = None
        self.purposes: list[str] | None = None
        self.categories: list[str] | None = None
        self.period: Period | None = None


def _read_period(r: _Reader, value: Any, path: str) -> Period | None:
    doc = r.obj(value, path)
    if doc is None:
        return None
    r.keys(doc, path, {"start", "end"}, what="a Period")
    if "start" not in doc:
        r.refuse(f"{path}.start", "Accord needs the date and time a provision starts")
        return None
    start = r.when(doc["start"], f"{path}.start")
    end = r.when(doc["end"], f"{path}.end") if "end" in doc else None
    if start is None or ("end" in doc and end is None):
        return None
    if end is not None and end <= start:
        r.refuse(f"{path}.end", "the period ends before (or when) it starts")
        return None
    return Period(start=start, end=end)


def _read_actors(r: _Reader, value: Any, path: str) -> Recipients | None:
    partners: list[str] = []
    types: list[str] = []
    ok = True
    actors = r.array(value, path)
    if not actors:
        r.refuse(path, "name at least one recipient")
        return None
    for i, actor in enumerate(actors):
        where = f"{path}[{i}]"
        doc = r.obj(actor, where)
        if doc is None:
            ok = False
            continue
        r.keys(doc, where, {"role", "reference"}, what="a Consent provision actor")
        roles = r.codings(doc.get("role"), f"{where}.role")
        if not roles or any((s, c) != (PARTICIPATION, "IRCP") for s, c, _ in roles):
            r.refuse(
                f"{where}.role",
                "Accord honours only the recipient role (v3-ParticipationType IRCP)",
            )
            ok = False
        ref = r.obj(doc.get("reference"), f"{where}.reference")
        if ref is None:
            ok = False
            continue
        if "reference" in ref:
            r.keys(ref, f"{where}.reference", {"reference"}, what="a partner reference")
            target = ref["reference"]
            pid = target.removeprefix("Organization/") if isinstance(target, str) else ""
            if not (isinstance(target, str) and target.startswith("Organization/")) or not (
                re.fullmatch(PARTNER_ID, pid)
            ):
                r.refuse(f"{where}.reference.reference", "must be Organization/<partner id>")
                ok = False
            else:
                partners.append(pid)
        elif "identifier" in ref:
            r.keys(ref, f"{where}.reference", {"type", "identifier"}, what="a partner-type")
            ident = r.obj(ref["identifier"], f"{where}.reference.identifier") or {}
            r.keys(
                ident, f"{where}.reference.identifier", {"system", "value"}, what="an Identifier"
            )
            if ref.get("type", "Organization") != "Organization":
                r.refuse(f"{where}.reference.type", "a recipient must be an Organization")
                ok = False
            if ident.get("system") != PARTNER_TYPE_SYSTEM:
                r.refuse(f"{where}.reference.identifier.system", "unknown identifier system")
                ok = False
            elif not isinstance(ident.get("value"), str) or ident["value"] not in {
                *PartnerType,
                ANY,
            }:
                r.refuse(f"{where}.reference.identifier.value", "not an Accord partner type")
                ok = False
            else:
                types.append(str(ident["value"]))
        else:
            r.refuse(
                f"{where}.reference",
                "reference a partner (Organization/<id>) or a partner type (identifier)",
            )
            ok = False
    if not ok:
        return None
    return Recipients.model_validate({"partners": partners, "partner_types": types})


def _read_purposes(r: _Reader, value: Any, path: str) -> list[str] | None:
    out: list[str] = []
    ok = True
    items = r.array(value, path)
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        coding = r.coding(item, where)
        if coding is None:
            ok = False
        elif coding[0] == ACT_REASON:
            r.refuse(
                where,
                "v3-ActReason purposes of use do not map exactly onto Accord's purposes; "
                f"use a purpose of {PURPOSE_SYSTEM}",
            )
            ok = False
        elif coding[0] != PURPOSE_SYSTEM:
            r.refuse(f"{where}.system", "unknown code system for a purpose")
            ok = False
        elif coding[1] not in {*Purpose, ANY}:
            r.refuse(f"{where}.code", "not an Accord purpose")
            ok = False
        else:
            out.append(coding[1])
    if not items:
        r.refuse(path, "must not be empty")
    return out if ok and out else None


def _category(r: _Reader, system: str, code: str, where: str) -> str | None:
    if system != CATEGORY_SYSTEM:
        r.refuse(f"{where}.system", "unknown code system for a data category")
        return None
    if code not in {*Category, ANY}:
        r.refuse(f"{where}.code", "not an Accord data category")
        return None
    return code


def _read_categories(r: _Reader, rule: dict[str, Any], path: str) -> list[str] | None:
    if "class" in rule and "code" in rule:
        r.refuse(f"{path}.code", "give data categories as class or as code, not both")
        return None
    out: list[str] = []
    ok = True
    if "class" in rule:
        items = r.array(rule["class"], f"{path}.class")
        for i, item in enumerate(items):
            coding = r.coding(item, f"{path}.class[{i}]")
            got = _category(r, *coding, f"{path}.class[{i}]") if coding else None
            ok = ok and got is not None
            if got is not None:
                out.append(got)
    else:
        items = r.array(rule["code"], f"{path}.code")
        for i, item in enumerate(items):
            codings = r.codings(item, f"{path}.code[{i}]")
            if len(codings) != 1:
                r.refuse(f"{path}.code[{i}]", "give exactly one data category per code")
                ok = False
                continue
            got = _category(r, *codings[0])
            ok = ok and got is not None
            if got is not None:
                out.append(got)
    if not items:
        r.refuse(f"{path}.{'class' if 'class' in rule else 'code'}", "must not be empty")
    return out if ok and out else None


def _read_actions(r: _Reader, value: Any, path: str) -> None:
    for i, item in enumerate(r.array(value, path)):
        for system, code, where in r.codings(item, f"{path}[{i}]"):
            if system != CONSENT_ACTION:
                r.refuse(f"{where}.system", "unknown code system for an action")
            elif code not in _ACCEPTED_ACTIONS:
                r.refuse(where, "Accord governs disclosure only: access or disclose")


def _read_rule(
    r: _Reader,
    rule: dict[str, Any],
    path: str,
    depth: int,
    parent: _Scope,
    parent_type: str | None,
    out: list[dict[str, Any]],
) -> None:
    r.keys(
        rule,
        path,
        _R4_PROVISION,
        what="an R4 Consent provision",
        r5=_R5_PROVISION,
        refused=_REFUSED_PROVISION,
    )
    kind = rule.get("type")
    if kind is None and depth > 0:
        r.refuse(f"{path}.type", "a nested provision must say permit or deny")
    elif kind is not None and kind not in ("permit", "deny"):
        r.refuse(f"{path}.type", "must be permit or deny")
        kind = None
    if kind == "permit" and parent_type == "deny":
        r.refuse(
            f"{path}.type",
            "a permit nested in a deny cannot be honoured: in Accord a deny always beats a "
            "permit (R2); state the permit beside the deny instead",
        )
    if "action" in rule:
        _read_actions(r, rule["action"], f"{path}.action")

    scope = _Scope()
    if "period" in rule:
        scope.period = _read_period(r, rule["period"], f"{path}.period")
        if scope.period and parent.period and not _within_period(scope.period, parent.period):
            r.refuse(f"{path}.period", "a nested provision may only narrow its parent's period")
    if "actor" in rule:
        scope.recipients = _read_actors(r, rule["actor"], f"{path}.actor")
        if (
            scope.recipients
            and parent.recipients
            and not _within_recipients(scope.recipients, parent.recipients)
        ):
            r.refuse(f"{path}.actor", "a nested provision may only narrow its parent's recipients")
    if "purpose" in rule:
        scope.purposes = _read_purposes(r, rule["purpose"], f"{path}.purpose")
        if (
            scope.purposes
            and parent.purposes
            and not _within_purposes(scope.purposes, parent.purposes)
        ):
            r.refuse(f"{path}.purpose", "a nested provision may only narrow its parent's purposes")
    if "class" in rule or "code" in rule:
        scope.categories = _read_categories(r, rule, path)
        if (
            scope.categories
            and parent.categories
            and not _within_categories(scope.categories, parent.categories)
        ):
            r.refuse(
                f"{path}.{'class' if 'class' in rule else 'code'}",
                "a nested provision may only narrow its parent's data categories",
            )
    stated = {k for k in ("period", "actor", "purpose", "class", "code") if k in rule}
    effective = _Scope()
    effective.period = scope.period if "period" in stated else parent.period
    effective.recipients = scope.recipients if "actor" in stated else parent.recipients
    effective.purposes = scope.purposes if "purpose" in stated else parent.purposes
    effective.categories = scope.categories if stated & {"class", "code"} else parent.categories

    if kind in ("permit", "deny"):
        missing = []
        if effective.period is None and "period" not in stated:
            missing.append(("period", "Accord needs the date and time a provision starts"))
        if effective.recipients is None and "actor" not in stated:
            missing.append(("actor", "name the recipients: partners or partner types"))
        if effective.categories is None and not stated & {"class", "code"}:
            missing.append(
                (
                    "class",
                    "name the data categories; a rule without them would cover sensitive "
                    "categories, which need to be named (R10); '*' is every non-sensitive one",
                )
            )
        for element, why in missing:
            r.refuse(f"{path}.{element}", why)
        if not missing and None not in (
            effective.period,
            effective.recipients,
            effective.categories,
        ):
            out.append(
                {
                    "type": kind,
                    "recipients": effective.recipients,
                    "purposes": effective.purposes or [ANY],
                    "categories": effective.categories,
                    "period": effective.period,
                }
            )
    nested = rule.get("provision")
    if nested is None:
        if kind is None and depth == 0:
            r.refuse(path, "a root provision without type must hold nested provisions")
        return
    if depth >= MAX_DEPTH:
        r.refuse(f"{path}.provision", "provisions nested more than three levels deep")
        return
    for i, child in enumerate(r.array(nested, f"{path}.provision")):
        where = f"{path}.provision[{i}]"
        doc = r.obj(child, where)
        if doc is not None:
            _read_rule(r, doc, where, depth + 1, effective, kind, out)


def _read_evidence(r: _Reader, resource: dict[str, Any]) -> Evidence | None:
    has_att, has_ref = "sourceAttachment" in resource, "sourceReference" in resource
    if has_att and has_ref:
        r.refuse("sourceReference", "give the evidence once: sourceAttachment or sourceReference")
        return None
    if not (has_att or has_ref):
        r.refuse("sourceAttachment", "Accord needs evidence: sourceAttachment or sourceReference")
        return None
    if has_att:
        doc = r.obj(resource["sourceAttachment"], "sourceAttachment")
        if doc is None:
            return None
        r.keys(
            doc,
            "sourceAttachment",
            {"title", "contentType"},
            what="evidence Accord keeps",
            refused={
                "data": "Accord keeps a reference to the evidence, never the document itself",
                "url": "Accord keeps a reference to the evidence, never fetches a document",
            },
        )
        title = r.text(doc.get("title"), "sourceAttachment.title")
        kind: Literal["signed_statement", "form_reference"] = "signed_statement"
        text = title
    else:
        doc = r.obj(resource["sourceReference"], "sourceReference")
        if doc is None:
            return None
        r.keys(doc, "sourceReference", {"reference", "display", "type"}, what="a Reference")
        if ("reference" in doc) == ("display" in doc):
            r.refuse("sourceReference", "give either reference or display, exactly one")
            return None
        key = "reference" if "reference" in doc else "display"
        text = r.text(doc[key], f"sourceReference.{key}")
        kind = "form_reference"
    if text is None:
        return None
    if len(text) > 500:
        r.refuse("sourceAttachment.title" if has_att else "sourceReference", "over 500 characters")
        return None
    return Evidence(kind=kind, reference=text)


def _read_patient(r: _Reader, value: Any, survivor_id: str | None) -> str | None:
    doc = r.obj(value, "patient")
    if doc is None:
        return None
    r.keys(
        doc,
        "patient",
        {"reference", "type"},
        what="the survivor's reference",
        refused={
            "identifier": "Accord identifies a survivor by pseudonym only",
            "display": "Accord identifies a survivor by pseudonym only",
        },
    )
    ref = doc.get("reference")
    pseudonym = ref.removeprefix("Patient/") if isinstance(ref, str) else ""
    if not (
        isinstance(ref, str) and ref.startswith("Patient/") and re.fullmatch(PSEUDONYM, pseudonym)
    ):
        r.refuse("patient.reference", "must be Patient/<the survivor's pseudonym>")
        return None
    if survivor_id is not None and pseudonym != survivor_id:
        r.refuse("patient.reference", "names another survivor than the one in the request")
        return None
    return pseudonym


def _read_performer(
    r: _Reader, resource: dict[str, Any], pseudonym: str | None
) -> RecordedBy | None:
    contained = resource.get("contained")
    guardian: dict[str, Any] | None = None
    if contained is not None:
        items = r.array(contained, "contained")
        for i, item in enumerate(items):
            doc = r.obj(item, f"contained[{i}]")
            if doc is None:
                continue
            if doc.get("resourceType") != "RelatedPerson" or doc.get("id") != GUARDIAN_REF[1:]:
                r.refuse(f"contained[{i}]", "only the recording guardian may be contained")
            else:
                guardian = doc
    performers = r.array(resource["performer"], "performer") if "performer" in resource else []
    if len(performers) > 1:
        r.refuse("performer", "Accord records one performer: who recorded the consent")
        return None
    if guardian is not None and not (
        performers
        and isinstance(performers[0], dict)
        and performers[0].get("reference") == GUARDIAN_REF
    ):
        r.refuse("contained[0]", "a contained guardian must be the performer")
    if not performers:
        return None
    doc = r.obj(performers[0], "performer[0]")
    if doc is None:
        return None
    ref = doc.get("reference")
    if ref == GUARDIAN_REF and guardian is not None:
        r.keys(doc, "performer[0]", {"reference"}, what="the performer")
        r.keys(
            guardian,
            "contained[0]",
            {"resourceType", "id", "identifier", "patient", "relationship"},
            what="the recording guardian",
        )
        idents = r.array(guardian.get("identifier"), "contained[0].identifier")
        ident = idents[0] if len(idents) == 1 and isinstance(idents[0], dict) else {}
        if ident.get("system") != GUARDIAN_SYSTEM or not isinstance(ident.get("value"), str):
            r.refuse("contained[0].identifier", f"one identifier of {GUARDIAN_SYSTEM}")
            return None
        patient = guardian.get("patient")
        if not isinstance(patient, dict) or patient.get("reference") != f"Patient/{pseudonym}":
            r.refuse("contained[0].patient", "must reference the consent's patient")
            return None
        relation: str | None = None
        if "relationship" in guardian:
            rels = r.array(guardian["relationship"], "contained[0].relationship")
            rel = rels[0] if len(rels) == 1 and isinstance(rels[0], dict) else {}
            if set(rel) != {"text"} or not isinstance(rel["text"], str):
                r.refuse("contained[0].relationship", "one relationship, given as text")
                return None
            relation = rel["text"]
        return RecordedBy(role="guardian", actor=ident["value"], relation=relation)
    if isinstance(ref, str) and ref.startswith("Patient/"):
        r.keys(doc, "performer[0]", {"reference"}, what="the performer")
        if pseudonym is None:
            return None  # the patient is refused already
        if ref != f"Patient/{pseudonym}":
            r.refuse("performer[0].reference", "a performing patient must be the consent's patient")
            return None
        return RecordedBy(role="self", actor=pseudonym)
    if doc.get("type") == "Practitioner" and "identifier" in doc:
        r.keys(doc, "performer[0]", {"type", "identifier"}, what="the performer")
        ident = doc["identifier"] if isinstance(doc["identifier"], dict) else {}
        if ident.get("system") != STAFF_SYSTEM or not isinstance(ident.get("value"), str):
            r.refuse("performer[0].identifier", f"must be an identifier of {STAFF_SYSTEM}")
            return None
        return RecordedBy(role="advocate", actor=ident["value"])
    r.refuse(
        "performer[0]",
        "must be the patient, an Accord staff member (Practitioner) or the contained guardian",
    )
    return None


def _read_header(r: _Reader, resource: dict[str, Any]) -> None:
    status = resource.get("status")
    if not isinstance(status, str) or status not in _R4_STATES:
        r.refuse("status", "must be an R4 consent state (active, inactive, ...)")
    elif status != "active":
        r.refuse("status", "only an active consent can be imported")
    if "scope" not in resource:
        r.refuse("scope", "required in R4: consentscope#patient-privacy")
    else:
        scopes = r.codings(resource["scope"], "scope")
        if not scopes or any((s, c) != (CONSENT_SCOPE, "patient-privacy") for s, c, _ in scopes):
            r.refuse("scope", "Accord imports privacy consents only (consentscope#patient-privacy)")
    categories = r.array(resource.get("category"), "category") if "category" in resource else []
    if not categories:
        r.refuse("category", "required in R4: LOINC 59284-0 (Patient Consent)")
    for i, concept in enumerate(categories):
        for system, code, where in r.codings(concept, f"category[{i}]"):
            if (system, code) not in _ACCEPTED_CATEGORIES:
                r.refuse(
                    where, "Accord imports consents to disclose: LOINC 59284-0 or v3-ActCode IDSCL"
                )
    if "policyRule" in resource:
        for system, code, where in r.codings(resource["policyRule"], "policyRule"):
            if (system, code) != (ACT_CODE, "OPTIN"):
                r.refuse(
                    where,
                    "Accord shares nothing without a permit (opt-in, v3-ActCode OPTIN); "
                    "other base policies cannot be honoured",
                )
    if "meta" in resource:
        meta = r.obj(resource["meta"], "meta")
        if meta is not None:
            r.keys(
                meta,
                "meta",
                {"versionId", "lastUpdated", "profile"},
                what="meta Accord can ignore",
                refused={"security": "security labels are not supported"},
            )
    if "dateTime" in resource:
        r.when(resource["dateTime"], "dateTime")


def from_fhir(resource: Any, *, survivor_id: str | None = None) -> ConsentIn:
    """Read a FHIR R4 Consent into Accord's grant input, or refuse it whole.

    ``survivor_id``: if given, ``patient`` must name this survivor. Raises ``FhirRefused`` with
    every problem found; messages name paths and never repeat values from the resource.
    """
    r = _Reader()
    if not isinstance(resource, dict) or resource.get("resourceType") != "Consent":
        raise FhirRefused(["resourceType: must be Consent"])
    r.keys(
        resource,
        "",
        _R4_CONSENT,
        what="an R4 Consent",
        r5=_R5_CONSENT,
        refused=_REFUSED_CONSENT,
    )
    _read_header(r, resource)
    pseudonym: str | None = None
    if "patient" in resource:
        pseudonym = _read_patient(r, resource["patient"], survivor_id)
    else:
        r.refuse("patient", "required: Patient/<the survivor's pseudonym>")
    _read_performer(r, resource, pseudonym)
    evidence = _read_evidence(r, resource)
    provisions: list[dict[str, Any]] = []
    root = resource.get("provision")
    if root is None:
        r.refuse("provision", "Accord needs at least one permit or deny provision")
    elif isinstance(root, list):
        r.refuse("provision", "a list of provisions is FHIR R5; in R4 provision is one root rule")
    else:
        doc = r.obj(root, "provision")
        if doc is not None:
            _read_rule(r, doc, "provision", 0, _Scope(), None, provisions)
    if r.problems:
        raise FhirRefused(r.problems)
    try:
        return ConsentIn.model_validate({"provisions": provisions, "evidence": evidence})
    except ValidationError as exc:
        raise FhirRefused(
            [
                f"provision: {e['msg']}" if e["type"] != "value_error" else "provision: invalid"
                for e in exc.errors()
            ]
        ) from None


def recorded_by_from_fhir(resource: dict[str, Any]) -> RecordedBy | None:
    """Who the resource says recorded it (informational: an import records the caller)."""
    r = _Reader()
    patient = resource.get("patient")
    ref = patient.get("reference") if isinstance(patient, dict) else None
    pseudonym = ref.removeprefix("Patient/") if isinstance(ref, str) else None
    by = _read_performer(r, resource, pseudonym)
    if r.problems:
        raise FhirRefused(r.problems)
    return by
