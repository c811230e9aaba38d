"""Mutation check of the Rego policies: delete each rule's clause in turn, the tests must fail.

For every rule id the policies implement (R1–R13, R15), ``MUTATIONS`` names one or more
clauses that carry that rule (each cited by its id in the Rego's ``rule:`` metadata or
comments) and a textual edit that removes or neutralises it while the policy still compiles.
Each mutant is a copy of ``policies/`` in a temporary directory with one edit applied; the
real tree is never touched. A mutant is *killed* if ``opa test`` fails on it, *invalid* if it
does not compile (``opa check``), and *survives* otherwise. Only the Rego tests are run, not
the end-to-end tests.

    python -m tools.policy_mutation          # print the table; exit 1 if any mutant survives
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.settings import REPO_ROOT

RULE_IDS = tuple(f"R{n}" for n in (*range(1, 14), 15))


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (which must occur exactly once in ``file``) by ``new``."""

    rule: str
    file: str  # relative to policies/
    what: str
    old: str
    new: str = ""


def _m(rule: str, file: str, what: str, old: str, new: str = "") -> Mutation:
    return Mutation(rule, f"accord/{file}", what, old, new)


D, C, V = "decision/decision.rego", "consent/consent.rego", "validation/validation.rego"
REP, SEN = "reporting/reporting.rego", "sensitivity/sensitivity.rego"
ELI, LEG = "eligibility/eligibility.rego", "legal_basis/legal_basis.rego"
JUR, CLK, AGG = "jurisdiction/jurisdiction.rego", "clock/clock.rego", "aggregate/aggregate.rego"
DL = "deadlines/deadlines.rego"
VAL = "validity/validity.rego"

# One row per mutant: rule, file, what the mutant does, text to replace (exactly once), by what
# ("" = delete). Deleting a conjunct or clause; `false` for a condition that is never true;
# `set()` for a list from policy data that is made empty.
# fmt: off
MUTATIONS: tuple[Mutation, ...] = (
    # R1 default deny
    _m("R1", D, "malformed input is judged instead of refused",
       "\tnot validation.well_formed(item)\n", "\tfalse\n"),
    _m("R1", D, "an unclassified field gets no R1",
       '{field: {"R1"} | some field in event.unclassified}', "{}"),
    _m("R1", V, "unknown purposes are well formed",
       "\titem.purpose in data.accord.vocabulary.purposes\n"),
    _m("R1", V, "unknown event types are well formed", "\tknown_event_type(item.event)\n"),
    _m("R1", V, "unknown partner types are well formed", "\tknown_partner(item.partner)\n"),
    _m("R1", V, "a negative age is well formed", "\tage >= 0\n"),
    # R2 consent scope
    _m("R2", C, "a deny no longer beats a permit",
       "\tundenied := categories - mentioned(view.denies, categories)\n",
       "\tundenied := categories\n"),
    _m("R2", C, "a provision for another purpose applies",
       "\trecipient_matches(partner, provision)\n\tpurpose_matches(purpose, provision)\n",
       "\trecipient_matches(partner, provision)\n"),
    _m("R2", C, "a provision for another recipient applies",
       "\tprovision.type == type\n\trecipient_matches(partner, provision)\n",
       "\tprovision.type == type\n"),
    # R3 revocation and expiry
    _m("R3", C, "a revoked consent counts", '\tconsent.status == "active"\n'),
    _m("R3", C, "a permit past its end applies",
       '\tclock.not_ended(object.get(provision.period, "end", null), now)\n'),
    _m("R3", C, "a permit not yet started applies", "\tclock.at(provision.period.start) <= now\n"),
    # R4 no mandatory reporting for adults
    _m("R4", C, 'a "*" permit reaches restricted recipients', "\t\treaches(view, permit)\n"),
    _m("R4", REP, "immigration enforcement is not restricted",
       "restricted_recipient(partner, _) if partner.immigration_enforcement == true\n"),
    _m("R4", REP, "restricted partner types are not restricted",
       "\tpartner.type in jurisdiction.settings(jurisdiction_id).adult_restricted_partner_types\n",
       "\tfalse\n"),
    # R5 mandated reporting for minors; suspect guardians
    _m("R5", REP, "adults get the mandated report",
       "mandated_report_recipient(partner, age, jurisdiction_id) if {\n"
       "\tminor_in(age, jurisdiction_id)\n",
       "mandated_report_recipient(partner, age, jurisdiction_id) if {\n"),
    _m("R5", D, "the mandated report is never a basis",
       "some field in known.mandated_fields}", "some field in set()}"),
    _m("R5", REP, "partners of another jurisdiction get the mandated report",
       "\tpartner_in_event_jurisdiction(partner, jurisdiction_id)\n"),
    _m("R5", REP, "an unknown age is never flagged",
       "null, jurisdiction_id) if reports_go_to(partner, jurisdiction_id)",
       "null, jurisdiction_id) if false"),
    _m("R5", D, "a decision flagged age_unknown is not reviewed",
       "} else := age_unknown_report\n", "} else := false\n"),
    _m("R5", C, "a suspect guardian's consent counts",
       "\tnot recorded_by_suspect(consent)\n}\n", "}\n"),
    _m("R5", C, "a guardian without a suspect flag is cleared",
       "\tnot consent.recorded_by.suspect == false\n", "\tconsent.recorded_by.suspect == true\n"),
    # R6 minimum necessary
    _m("R6", D, "consent releases without need to know",
       "\teligible := agreed & known.needed_categories\n", "\teligible := agreed\n"),
    # R7 never shared
    _m("R7", SEN, "shelter_location may leave", "vocabulary.never_shared_categories", "set()"),
    _m("R7", SEN, "internal fields may leave", "classification.internal_fields", "set()"),
    _m("R7", D, "internal-only event types are judged",
       "\tsensitivity.internal_event_type(item)\n", "\tfalse\n"),
    _m("R7", D, "never-shared categories pass the gates",
       "\tnever := categories & sensitivity.never_shared_categories\n", "\tnever := set()\n"),
    _m("R7", D, "internal fields are releasable",
       '"releasable": object.remove(classified, internal_fields),', '"releasable": classified,'),
    # R8 imminent danger
    _m("R8", D, "a declaration is never a basis",
       "some field in known.emergency_fields}", "some field in set()}"),
    _m("R8", LEG, "a declaration lasts forever",
       "\tnow < declared + "
       "(jurisdiction.settings(jurisdiction_id).imminent_danger.hours * hour_ns)\n"),
    _m("R8", LEG, "an ended declaration still applies",
       '\tclock.not_ended(object.get(declaration, "ended_at", null), now)\n'),
    _m("R8", LEG, "another agency's declaration applies",
       "\tdeclaration.agency == agency.id\n"),
    _m("R8", LEG, "every partner type is an emergency recipient",
       "\tpartner_type in settings.recipients\n"),
    _m("R8", LEG, "partners of every jurisdiction are emergency recipients",
       "\temergency_jurisdiction(partner_jurisdiction, jurisdiction_id)\n"),
    _m("R8", LEG, "a configured neighbouring jurisdiction is not a recipient",
       "\tpartner_jurisdiction in jurisdiction.settings(jurisdiction_id)"
       ".imminent_danger.neighbouring_jurisdictions\n", "\tfalse\n"),
    _m("R8", D, "legal-basis releases are not reviewed",
       '\tbasis in {"imminent_danger", "court_order"}\n', "\tfalse\n"),
    # R9 court order
    _m("R9", D, "a court order is never a basis",
       "some field in known.court_order_fields}", "some field in set()}"),
    _m("R9", LEG, "an expired order applies", "\tnow < clock.at(order.expires_at)\n"),
    _m("R9", LEG, "an order for another recipient applies",
       "\torder.recipient == partner_id\n"),
    _m("R9", LEG, "an order without an id applies", "\tis_string(order.id)\n"),
    # R10 sensitive categories
    _m("R10", C, '"*" covers sensitive categories',
       "starred(lists, categories) := categories - sensitivity.sensitive_categories if",
       "starred(lists, categories) := categories if"),
    _m("R10", D, "bars are ignored",
       "} else := {cat: {\"R10\"} | some cat in (categories & known.barred_categories)}",
       "} else := {}"),
    _m("R10", SEN, "no bars by partner type",
       "vocabulary.barred_categories_by_partner_type[type]", "set()"),
    _m("R10", SEN, "no bars for immigration enforcement",
       "vocabulary.barred_categories_for_immigration_enforcement", "set()"),
    _m("R10", SEN, "no re-disclosure notice", "vocabulary.redisclosure_notice_categories", "set()"),
    # R11 partner eligibility
    _m("R11", ELI, "an inactive partner is admitted", '\tpartner.status == "active"\n'),
    _m("R11", ELI, "an unvetted partner is admitted", "\tpartner.vetted == true\n"),
    _m("R11", D, "the admission gate is ignored", "\tknown.admitted == false\n", "\tfalse\n"),
    _m("R11", D, "consent releases without an agreement",
       "\tagreed := categories & known.consent_categories\n", "\tagreed := categories\n"),
    _m("R11", ELI, "a lapsed agreement is in force", "\tnow < clock.at(agreement.valid_until)\n"),
    _m("R11", ELI, "an agreement covers any purpose", "\tpurpose in agreement.purposes\n"),
    _m("R11", ELI, "training is not required",
       "\tadmitted_partner(partner)\n\ttraining_current(partner, jurisdiction_id, now)\n",
       "\tadmitted_partner(partner)\n"),
    # R12 jurisdiction
    _m("R12", JUR, "overrides are ignored",
       "\tdata.accord.jurisdictions.overrides[id],\n", "\t{},\n"),
    _m("R12", JUR, "every event is judged under state-a",
       "of(item) := item.event.agency.jurisdiction", 'of(_) := "state-a"'),
    _m("R12", JUR, "any jurisdiction id is known",
       "\tid in object.keys(data.accord.jurisdictions.overrides)\n"),
    _m("R12", DL, "referral deadlines ignore the partner type",
       "object.get(terms.by_partner_type, input.partner_type, {})", "{}"),
    _m("R12", DL, "referral deadlines ignore the jurisdiction",
       "_terms_of(id) := jurisdiction.settings(id).referral_deadlines if",
       "_terms_of(id) := data.accord.jurisdictions.default.referral_deadlines if"),
    # R13 every decision explained, deterministic
    _m("R13", D, "the policy revision is never pinned",
       "policy_revision := data.accord.meta.revision if is_string(data.accord.meta.revision)\n"),
    _m("R13", D, "reasons omit the allowing rules",
       ":= sort(allowing | denying) if {", ":= sort(denying) if {"),
    _m("R13", D, "batch drops its last item",
       "batch := [decide(item) | some item in input.items]",
       "batch := [decide(item) | some i, item in input.items; i < count(input.items) - 1]"),
    _m("R13", CLK, "decision time is the wall clock",
       "now_ns(item) := time.parse_rfc3339_ns(item.now)", "now_ns(_) := time.now_ns()"),
    # R13 valid_until: the first future time the policy compares, derived ones included
    _m("R13", VAL, "valid_until ignores consent periods",
       '(consent_times(object.get(item, "consents", [])) | partner_times(item.partner))',
       "partner_times(item.partner)"),
    _m("R13", VAL, "valid_until ignores the training attestation",
       " | {t | t := clock.at(partner.training_attested_until)}"),
    _m("R13", VAL, "valid_until ignores agreement periods",
       '{t | some agreement in partner.agreements; some end in ["valid_from", "valid_until"]; '
       "t := clock.at(agreement[end])} | ", ""),
    _m("R13", VAL, "valid_until ignores a declaration's lapse",
       "\tt := clock.at(declaration.declared_at) + (jurisdiction.settings(jurisdiction_id)"
       ".imminent_danger.hours * legal_basis.hour_ns)\n",
       "\tt := clock.at(declaration.declared_at)\n"),
    _m("R13", VAL, "valid_until ignores a declaration's start",
       "({t | some declaration in declarations; t := clock.at(declaration.declared_at)} | "
       "{t | some declaration in declarations; t := clock.at(declaration.ended_at)})",
       "{t | some declaration in declarations; t := clock.at(declaration.ended_at)}"),
    _m("R13", VAL, "valid_until ignores a declaration's end",
       "{t | some declaration in declarations; t := clock.at(declaration.ended_at)}", "set()"),
    _m("R13", VAL, "valid_until ignores court orders",
       ' | order_times(object.get(item, "court_orders", []))', ""),
    _m("R13", VAL, "valid_until counts a time equal to now as ahead",
       "t > now}", "t >= now}"),
    # R15 small numbers stay hidden
    _m("R15", AGG, "small counts are shown", "suppressed(n, id) if n < threshold(id)\n"),
    _m("R15", AGG, "counts of unknown jurisdictions are shown",
       "suppressed(_, id) if not jurisdiction.known(id)\n"),
)
# fmt: on


@dataclass(frozen=True)
class Outcome:
    mutation: Mutation
    compiles: bool
    failed: tuple[str, ...]  # failing (or erroring) test names

    @property
    def killed(self) -> bool:
        return self.compiles and bool(self.failed)


def apply(mutation: Mutation, root: Path) -> None:
    """Apply one mutation to the policy tree at ``root`` (a copy, never the real one)."""
    path = root / mutation.file
    text = path.read_text()
    found = text.count(mutation.old)
    if found != 1:
        raise ValueError(f"{mutation.rule} {mutation.what}: target occurs {found}x in {path}")
    path.write_text(text.replace(mutation.old, mutation.new))


def failing_tests(opa: Path, root: Path) -> tuple[bool, tuple[str, ...]]:
    """(compiles, names of failing tests) of the policy tree at ``root``."""
    check = subprocess.run([opa, "check", root], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        return False, ()
    run = subprocess.run(
        [opa, "test", "--format", "json", root], capture_output=True, text=True, check=False
    )
    try:
        results = json.loads(run.stdout)
    except json.JSONDecodeError as exc:  # opa test could not run at all: a tooling fault
        raise RuntimeError(f"opa test failed to run on {root}: {run.stderr.strip()}") from exc
    return True, tuple(sorted(str(r["name"]) for r in results if r.get("fail") or r.get("error")))


def run_mutations(
    opa: Path, policies: Path, mutations: Sequence[Mutation] = MUTATIONS
) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="accord-mutant-") as tmp:
        baseline = Path(tmp) / "baseline"
        shutil.copytree(policies, baseline)
        compiles, failed = failing_tests(opa, baseline)
        if not compiles or failed:
            raise RuntimeError(f"the unmutated suite does not pass: {failed or 'compile error'}")
        outcomes = []
        for i, mutation in enumerate(mutations):
            root = Path(tmp) / f"mutant-{i}"
            shutil.copytree(baseline, root)  # every mutant from the same snapshot
            apply(mutation, root)
            outcomes.append(Outcome(mutation, *failing_tests(opa, root)))
            shutil.rmtree(root)
        return outcomes


def table(outcomes: Sequence[Outcome]) -> str:
    rows = [
        "| rule | mutation | compiles | tests failed | killed |",
        "| --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        m = o.mutation
        names = ", ".join(o.failed[:3]) + (
            f", … (+{len(o.failed) - 3})" if len(o.failed) > 3 else ""
        )
        failed = f"{len(o.failed)}: {names}" if o.failed else "0"
        rows.append(
            f"| {m.rule} | `{m.file.removeprefix('accord/')}`: {m.what} | "
            f"{'yes' if o.compiles else 'NO'} | {failed} | "
            f"{'yes' if o.killed else ('INVALID' if not o.compiles else 'SURVIVED')} |"
        )
    return "\n".join(rows)


def main() -> int:
    from services.devstack.opa import ensure_binary
    from services.settings import Settings

    outcomes = run_mutations(ensure_binary(Settings()), REPO_ROOT / "policies")
    print(table(outcomes))
    bad = [o for o in outcomes if not o.killed]
    rules = sorted({o.mutation.rule for o in outcomes}, key=lambda r: int(r[1:]))
    print(
        f"\n{len(outcomes) - len(bad)}/{len(outcomes)} mutants killed "
        f"across {len(rules)} rules ({', '.join(rules)}); "
        f"{sum(not o.compiles for o in outcomes)} invalid, "
        f"{sum(o.compiles and not o.failed for o in outcomes)} survived"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
