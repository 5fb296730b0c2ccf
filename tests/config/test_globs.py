"""The one glob rule behind --cells, --probes, deploy cell selections and a target's probes."""

from __future__ import annotations

from canary.config.globs import Selection, select_names

CELLS = ["m/p/a", "m/p/b", "m/q/a", "n/p/a"]


def test_an_exclusion_removes_a_cell_that_an_inclusion_selects() -> None:
    assert select_names("m/p/*,!m/p/b", CELLS) == ["m/p/a"]


def test_exclusions_alone_start_from_every_name() -> None:
    assert select_names("!m/p/b", CELLS) == ["m/p/a", "m/q/a", "n/p/a"]
    assert select_names("!m/p/b,!n/*", CELLS) == ["m/p/a", "m/q/a"]


def test_no_patterns_select_everything_and_an_unmatched_inclusion_selects_nothing() -> None:
    assert select_names(None, CELLS) == CELLS
    assert select_names("", CELLS) == CELLS
    assert select_names(" , ,", CELLS) == CELLS
    assert select_names("x/*", CELLS) == []


def test_whitespace_is_trimmed_and_empty_items_are_ignored() -> None:
    assert select_names("  m/p/* ,, ! m/p/b ,", CELLS) == ["m/p/a"]


def test_a_list_of_patterns_means_the_same_as_their_comma_joined_text() -> None:
    assert select_names(["m/*", "!m/p/b"], CELLS) == select_names("m/*,!m/p/b", CELLS)
    assert select_names(["m/p/*,!m/p/b", "n/*"], CELLS) == ["m/p/a", "n/p/a"]


def test_matching_is_case_sensitive_fnmatch() -> None:
    assert select_names("M/p/*", CELLS) == []
    assert select_names("?/p/[ab]", CELLS) == ["m/p/a", "m/p/b", "n/p/a"]


def test_results_keep_the_order_of_the_names_not_of_the_patterns() -> None:
    assert select_names("n/*,m/p/a", CELLS) == ["m/p/a", "n/p/a"]


def test_a_thing_with_several_names_matches_when_any_name_does() -> None:
    # A probe is known by its id and its set: "code-*" takes it by set, "!code-sql" drops it by set.
    selection = Selection.parse("code-*,!code-sql,!py-syntax-2")
    assert selection.matches("py-syntax-1", "code-python")
    assert not selection.matches("py-syntax-2", "code-python")
    assert not selection.matches("sql-select-1", "code-sql")
    assert not selection.matches("en-capital-france", "facts")


def test_unmatched_names_the_patterns_that_match_nothing_with_their_bang() -> None:
    assert Selection.parse("m/p/*,x/*,!m/p/b,!y/*").unmatched(CELLS) == ["x/*", "!y/*"]
