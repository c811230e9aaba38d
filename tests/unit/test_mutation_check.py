"""The mutation table of tools/policy_mutation.py cannot silently go stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.settings import REPO_ROOT
from tools.policy_mutation import MUTATIONS, RULE_IDS, Mutation, Outcome, apply, table

POLICIES = REPO_ROOT / "policies"


def test_every_rule_the_policies_implement_has_a_mutation() -> None:
    assert set(RULE_IDS) == {f"R{n}" for n in range(1, 16)} - {"R14"}
    assert {m.rule for m in MUTATIONS} == set(RULE_IDS)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: f"{m.rule}-{m.what}")
def test_each_target_occurs_exactly_once_in_a_file_citing_its_rule(mutation: Mutation) -> None:
    text = (POLICIES / mutation.file).read_text()
    assert text.count(mutation.old) == 1
    assert mutation.old != mutation.new
    assert re.search(rf"\b{mutation.rule}\b", text), f"{mutation.file} never cites {mutation.rule}"


def test_mutations_are_distinct() -> None:
    assert len({(m.file, m.old, m.new) for m in MUTATIONS}) == len(MUTATIONS)


def test_apply_edits_only_the_copy_and_refuses_a_missing_target(tmp_path: Path) -> None:
    (tmp_path / "accord").mkdir()
    policy = tmp_path / "accord" / "p.rego"
    policy.write_text("a if {\n\tx\n\ty\n}\n")
    apply(Mutation("R1", "accord/p.rego", "drop x", "\tx\n"), tmp_path)
    assert policy.read_text() == "a if {\n\ty\n}\n"
    with pytest.raises(ValueError, match="occurs 0x"):
        apply(Mutation("R1", "accord/p.rego", "drop x", "\tx\n"), tmp_path)


def test_a_mutant_that_does_not_compile_is_not_killed() -> None:
    m = MUTATIONS[0]
    assert Outcome(m, compiles=True, failed=("test_R1_x",)).killed
    assert not Outcome(m, compiles=True, failed=()).killed
    assert not Outcome(m, compiles=False, failed=()).killed
    rows = table(
        [Outcome(m, True, ("t",)), Outcome(m, True, ()), Outcome(m, False, ())]
    ).splitlines()
    assert [row.rsplit("|", 2)[-2].strip() for row in rows[2:]] == ["yes", "SURVIVED", "INVALID"]
