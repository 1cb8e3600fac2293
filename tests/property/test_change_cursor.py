"""The changes cursor (docs/contract.md §10): whatever is done to one, it is applied as made or
refused with an input error, never misapplied; and the query built from it stays ServiceNow's."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicenow_worker.change_cursor import Position, decode, encode, stamp_of
from servicenow_worker.errors import InputError
from servicenow_worker.operations.changes import window_query

stamps = st.integers(min_value=0, max_value=4_102_444_800).map(stamp_of)  # 1970 to 2100
sys_ids = st.none() | st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True)
positions = st.builds(Position, stamps, sys_ids)
tables = st.from_regex(r"[a-z_]{1,20}", fullmatch=True)
queries = st.none() | st.text(max_size=40)


@given(position=positions, table=tables, query=queries)
def test_a_cursor_gives_back_its_position(
    position: Position, table: str, query: str | None
) -> None:
    assert decode(encode(position, table, query), table, query) == position


@given(
    position=positions,
    table=tables,
    query=queries,
    index=st.integers(min_value=0),
    replacement=st.characters(codec="ascii"),
)
def test_an_edited_character_is_refused(
    position: Position, table: str, query: str | None, index: int, replacement: str
) -> None:
    cursor = encode(position, table, query)
    index %= len(cursor)
    edited = cursor[:index] + replacement + cursor[index + 1 :]
    if edited.strip() == cursor:
        return  # the same cursor (or only surrounding blanks, which a copy may add)
    with pytest.raises(InputError) as refused:
        decode(edited, table, query)
    assert refused.value.field == "cursor"


@given(position=positions, table=tables, query=queries, keep=st.integers(min_value=0))
def test_a_cursor_cut_short_is_refused(
    position: Position, table: str, query: str | None, keep: int
) -> None:
    cursor = encode(position, table, query)
    with pytest.raises(InputError):
        decode(cursor[: keep % len(cursor)], table, query)


@given(position=positions, table=tables, query=queries, other_table=tables, other=queries)
def test_a_cursor_of_another_feed_is_refused(
    position: Position, table: str, query: str | None, other_table: str, other: str | None
) -> None:
    if (other_table, other or "") == (table, query or ""):
        return
    with pytest.raises(InputError, match="another table or query"):
        decode(encode(position, table, query), other_table, other)


@given(text=st.text(max_size=200), table=tables, query=queries)
def test_any_text_is_a_position_or_refused(text: str, table: str, query: str | None) -> None:
    try:
        position = decode(text, table, query)
    except InputError:
        return
    assert encode(position, table, query) == text.strip()


@given(position=positions, query=st.none() | st.from_regex(r"[a-z_]{1,10}=[a-z0-9]{1,5}"))
def test_the_window_query_holds_only_servicenow_operators(
    position: Position, query: str | None
) -> None:
    """The position's stamp and sys_id are plain values: no `^` that could add a condition."""
    built = window_query(query, position)
    parts = built.split("^")
    assert parts[-2:] == ["ORDERBYsys_updated_on", "ORDERBYsys_id"]
    blocks = "^".join(parts[:-2]).split("^NQ")
    assert len(blocks) == (1 if position.sys_id is None else 2)
    assert blocks[0].endswith(f"sys_updated_on>{position.updated_on}")
