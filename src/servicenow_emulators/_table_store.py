"""In-memory record store and response renderer for the ServiceNow Table API emulator.

Models what the instance's database and REST layer do with a record: defaults, `number`
auto-numbering and `sys_*` bookkeeping on insert, the few business rules a client can observe
(incident priority from impact and urgency, `active` following the state), and the rendering of
a record for `sysparm_fields`, `sysparm_display_value` and `sysparm_exclude_reference_link`
(reference A4).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from ._table_query import CompiledQuery, InvalidQueryPolicy, compile_query, parse
from ._table_schema import (
    PRIORITY_MATRIX,
    SYS_FIELD_NAMES,
    Dynamic,
    Field,
    FieldType,
    TableSchema,
    builtin_tables,
    coerce_value,
)

__all__ = ["DisplayMode", "Record", "TableStore", "now_utc"]

Record = dict[str, str]
JSONValue = str | None | dict[str, str | None]
Renderer = Callable[[Record], dict[str, JSONValue]]
_EMPTY: Record = {}


def now_utc() -> str:
    """The current time as ServiceNow stores date-times: UTC, `YYYY-MM-DD HH:MM:SS`."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


class DisplayMode:
    """Values of `sysparm_display_value`."""

    FALSE = "false"
    TRUE = "true"
    ALL = "all"

    @staticmethod
    def parse(text: str | None) -> str:
        """Anything but `true` and `all` (any case) means stored values."""
        lowered = (text or "").lower()
        return lowered if lowered in (DisplayMode.TRUE, DisplayMode.ALL) else DisplayMode.FALSE


class TableStore:
    """Schemas and records of every table, plus the per-(table, query) compiled-query cache."""

    def __init__(self, stamp: Callable[[], str] = now_utc) -> None:
        # the instance clock's current time as a stored date-time (sys_created_on, sys_updated_on)
        self._stamp = stamp
        self.schemas: dict[str, TableSchema] = {}
        self.rows: dict[str, dict[str, Record]] = {}
        self._compiled: dict[tuple[str, str, InvalidQueryPolicy], CompiledQuery] = {}
        self._renderers: dict[tuple[str, str | None, str, bool, str], Renderer] = {}
        self._user_ids: dict[str, str] = {}
        # Hash indexes built on first use by a `field=value` query, kept up to date by writes:
        # table → field → value → sys_ids. `_seq` restores table order inside a bucket.
        self._indexes: dict[str, dict[str, dict[str, dict[str, None]]]] = {}
        self._seq: dict[str, dict[str, int]] = {}
        self._next_seq = 0
        for schema in builtin_tables():
            self.add_table(schema)

    # -- schema ---------------------------------------------------------------------------

    def add_table(self, schema: TableSchema) -> TableSchema:
        """Register a table; for a known name, add the new fields and keep records and numbering."""
        existing = self.schemas.get(schema.name)
        if existing is None:
            self.schemas[schema.name] = schema
            self.rows[schema.name] = {}
            self._indexes[schema.name] = {}
            self._seq[schema.name] = {}
        else:
            for name, f in schema.fields.items():
                if name not in existing.fields:
                    existing.fields[name] = f
                    for record in self.rows[schema.name].values():
                        record[name] = f.default if isinstance(f.default, str) else ""
            schema = existing
        # field sets changed: compiled queries and renderers may now resolve differently
        self._compiled.clear()
        self._renderers.clear()
        return schema

    # -- reads ----------------------------------------------------------------------------

    def display_of(self, table: str, sys_id: str) -> str:
        """The display value of a referenced record; "" when empty or dangling."""
        if not sys_id:
            return ""
        record = self.rows.get(table, _EMPTY_ROWS).get(sys_id)
        if record is None:
            return ""
        return record.get(self.schemas[table].display_field, "")

    def compiled(self, table: str, query: str, policy: InvalidQueryPolicy) -> CompiledQuery:
        """The compiled form of `query` on `table`, built once per distinct query."""
        key = (table, query, policy)
        compiled = self._compiled.get(key)
        if compiled is None:
            if len(self._compiled) > 4096:
                self._compiled.clear()
            compiled = compile_query(
                parse(query),
                schema=self.schemas[table],
                schemas=self.schemas,
                store=self.rows,
                display_of=self.display_of,
                policy=policy,
            )
            self._compiled[key] = compiled
        return compiled

    def select(self, table: str, compiled: CompiledQuery) -> list[Record]:
        """The rows of `table` matching `compiled`, in table order unless it sorts them."""
        if compiled.index is None or compiled.no_rows:
            return compiled.apply(list(self.rows[table].values()))
        name, value = compiled.index
        index = self._indexes[table].get(name)
        if index is None:
            index = self._build_index(table, name)
        bucket = index.get(value)
        if not bucket:
            return []
        rows = self.rows[table]
        candidates = [rows[sys_id] for sys_id in bucket]
        if len(candidates) > 1:
            seq = self._seq[table]
            candidates.sort(key=lambda r: seq[r["sys_id"]])
        return compiled.apply(candidates)

    def _build_index(self, table: str, name: str) -> dict[str, dict[str, None]]:
        index: dict[str, dict[str, None]] = {}
        for sys_id, record in self.rows[table].items():
            index.setdefault(record.get(name, ""), {})[sys_id] = None
        self._indexes[table][name] = index
        return index

    def _unindex(self, table: str, record: Record) -> None:
        sys_id = record["sys_id"]
        for name, index in self._indexes[table].items():
            bucket = index.get(record.get(name, ""))
            if bucket is not None:
                bucket.pop(sys_id, None)

    def _reindex(self, table: str, record: Record) -> None:
        sys_id = record["sys_id"]
        for name, index in self._indexes[table].items():
            index.setdefault(record.get(name, ""), {})[sys_id] = None

    def user_sys_id(self, user_name: str | None) -> str:
        """sys_id of the sys_user record whose user_name is `user_name`, or ""."""
        if not user_name:
            return ""
        users = self.rows["sys_user"]
        cached = self._user_ids.get(user_name)
        if cached is not None and users.get(cached, _EMPTY).get("user_name") == user_name:
            return cached
        for sys_id, record in users.items():
            if record.get("user_name") == user_name:
                self._user_ids[user_name] = sys_id
                return sys_id
        return ""

    # -- writes ---------------------------------------------------------------------------

    def _resolve_input(
        self, schema: TableSchema, f: Field, value: object, input_display_value: bool
    ) -> str:
        text = coerce_value(value, f.type)
        if not input_display_value or not text:
            return text
        if f.reference is not None and text not in self.rows.get(f.reference, _EMPTY_ROWS):
            target = self.schemas.get(f.reference)
            if target is not None:
                for sys_id, record in self.rows[f.reference].items():
                    if record.get(target.display_field) == text:
                        return sys_id
        elif f.type is FieldType.CHOICE and text not in f.choices:
            for choice_value, label in f.choices.items():
                if label.lower() == text.lower():
                    return choice_value
        return text

    def insert(
        self,
        table: str,
        values: Mapping[str, object],
        *,
        user: str,
        from_rest: bool,
        input_display_value: bool = False,
        updated_on: str | None = None,
    ) -> Record:
        """Create a record. REST writes drop unknown and `sys_*` fields; seeding
        (`from_rest=False`) may set `sys_*` fields, rejects unknown ones and lets business rules
        fill in only the fields it does not set. `updated_on` stamps the record with an earlier
        time than the clock's: a transaction that began then and commits now (a late commit)."""
        schema = self.schemas[table]
        now = updated_on or self._stamp()
        record: Record = {}
        for name, f in schema.fields.items():
            default = f.default
            if default is Dynamic.NOW:
                record[name] = now
            elif default is Dynamic.USER:
                record[name] = self.user_sys_id(user)
            else:
                assert isinstance(default, str)
                record[name] = default
        self._apply(schema, record, values, from_rest, input_display_value)
        if not record["sys_id"] or from_rest:
            record["sys_id"] = uuid.uuid4().hex
        if schema.number_prefix is not None and not record.get("number"):
            record["number"] = schema.next_number_value()
        record["sys_class_name"] = record["sys_class_name"] or table
        record["sys_created_on"] = record["sys_created_on"] or now
        record["sys_updated_on"] = record["sys_updated_on"] or record["sys_created_on"]
        record["sys_created_by"] = record["sys_created_by"] or user
        record["sys_updated_by"] = record["sys_updated_by"] or record["sys_created_by"]
        self._business_rules(schema, record, values, keep_given=not from_rest)
        previous = self.rows[table].get(record["sys_id"])
        if previous is not None:
            self._unindex(table, previous)  # a seed may reuse a sys_id
        self.rows[table][record["sys_id"]] = record
        self._seq[table][record["sys_id"]] = self._next_seq
        self._next_seq += 1
        self._reindex(table, record)
        return record

    def update(
        self,
        table: str,
        sys_id: str,
        values: Mapping[str, object],
        *,
        user: str,
        from_rest: bool,
        input_display_value: bool = False,
        updated_on: str | None = None,
    ) -> Record | None:
        """Change the given fields only (PUT behaves like PATCH); None when the id is unknown.
        `updated_on` as for `insert`."""
        schema = self.schemas[table]
        record = self.rows[table].get(sys_id)
        if record is None:
            return None
        self._unindex(table, record)
        self._apply(schema, record, values, from_rest, input_display_value)
        record["sys_id"] = sys_id  # the key of the row never changes
        if from_rest:
            self._business_rules(schema, record, values)
            record["sys_updated_on"] = updated_on or self._stamp()
            record["sys_updated_by"] = user
            record["sys_mod_count"] = str(int(record.get("sys_mod_count") or "0") + 1)
        self._reindex(table, record)
        return record

    def _apply(
        self,
        schema: TableSchema,
        record: Record,
        values: Mapping[str, object],
        from_rest: bool,
        input_display_value: bool,
    ) -> None:
        for name, value in values.items():
            f = schema.fields.get(name)
            if f is None:
                if from_rest:
                    continue  # ServiceNow silently drops unknown fields
                raise KeyError(f"table {schema.name} has no field {name!r}")
            if from_rest and name in SYS_FIELD_NAMES:
                continue  # sys_* fields are not writable through the Table API
            if f.type is FieldType.JOURNAL and from_rest:
                # journal entries are write-only: they never read back through the Table API
                continue
            record[name] = self._resolve_input(schema, f, value, input_display_value)

    @staticmethod
    def _business_rules(
        schema: TableSchema,
        record: Record,
        values: Mapping[str, object],
        *,
        keep_given: bool = False,
    ) -> None:
        """Incident priority from impact and urgency; `active` following the state. A seed
        (`keep_given`) keeps the values it sets explicitly."""
        if schema.priority_from_impact_urgency and not (keep_given and "priority" in values):
            computed = PRIORITY_MATRIX.get((record.get("impact", ""), record.get("urgency", "")))
            if computed is not None:
                record["priority"] = computed
        if schema.inactive_states and "state" in values and not (keep_given and "active" in values):
            record["active"] = "false" if record.get("state") in schema.inactive_states else "true"

    def delete(self, table: str, sys_id: str) -> bool:
        """Remove a record; False when there was none."""
        record = self.rows[table].pop(sys_id, None)
        if record is None:
            return False
        self._unindex(table, record)
        self._seq[table].pop(sys_id, None)
        return True

    # -- rendering ------------------------------------------------------------------------

    def renderer(
        self,
        table: str,
        fields: str | None,
        mode: str,
        exclude_reference_link: bool,
        link_base: str,
    ) -> Renderer:
        """A function turning a stored record into the JSON object the REST API returns.

        `fields` is `sysparm_fields` (unknown names dropped, `ref.field` dot-walks one level and
        comes back as a flat key); `link_base` is `<scheme>://<host>/api/now[/vN]/table/`.
        """
        key = (table, fields, mode, exclude_reference_link, link_base)
        cached = self._renderers.get(key)
        if cached is not None:
            return cached
        if len(self._renderers) > 1024:
            self._renderers.clear()
        schema = self.schemas[table]
        style = _Style(mode, exclude_reference_link, link_base, self.display_of)
        plan: list[tuple[str, Callable[[Record], JSONValue]]] = []
        if fields:
            seen: set[str] = set()
            for raw in fields.split(","):
                name = raw.strip()
                if not name or name in seen:
                    continue
                seen.add(name)
                entry = self._field_entry(schema, name, style)
                if entry is not None:
                    plan.append((name, entry))
        else:
            plan.extend((name, style.field(f, name)) for name, f in schema.fields.items())

        def render(record: Record) -> dict[str, JSONValue]:
            return {name: entry(record) for name, entry in plan}

        self._renderers[key] = render
        return render

    def _field_entry(
        self, schema: TableSchema, name: str, style: _Style
    ) -> Callable[[Record], JSONValue] | None:
        base, _, sub = name.partition(".")
        f = schema.fields.get(base)
        if f is None:
            return None
        if not sub:
            return style.field(f, base)
        if f.reference is None or "." in sub:
            return None
        target = self.schemas.get(f.reference)
        if target is None or sub not in target.fields:
            return None
        inner = style.field(target.fields[sub], sub)
        target_rows = self.rows[f.reference]

        def dot_walk(record: Record) -> JSONValue:
            return inner(target_rows.get(record.get(base, ""), _EMPTY))

        return dot_walk

    def all_rows(self, table: str) -> Iterable[Record]:
        """Every record of `table`, in insertion order."""
        return self.rows[table].values()


_EMPTY_ROWS: dict[str, Record] = {}


@dataclass(frozen=True, slots=True)
class _Style:
    """How one request wants fields rendered: the display-value by reference-link matrix of
    reference A4, with links under `link_base`."""

    mode: str
    exclude_link: bool
    link_base: str
    display_of: Callable[[str, str], str]

    def field(self, f: Field, name: str) -> Callable[[Record], JSONValue]:
        """The renderer of field `f`, stored under `name` in a record."""
        if f.type is FieldType.JOURNAL:
            # write-only: reads back empty in every mode
            empty: JSONValue = {"display_value": "", "value": ""} if self.mode == "all" else ""
            return lambda r: empty
        if f.reference is not None:
            return self._reference(f.reference, name)
        if self.mode == DisplayMode.FALSE:
            return lambda r: r.get(name, "")
        if f.type is FieldType.CHOICE:
            return self._choice(f.choices, name)
        if self.mode == DisplayMode.TRUE:
            return lambda r: r.get(name, "")

        def plain_all(r: Record) -> JSONValue:
            v = r.get(name, "")
            return {"display_value": v, "value": v}

        return plain_all

    def _choice(self, labels: Mapping[str, str], name: str) -> Callable[[Record], JSONValue]:
        if self.mode == DisplayMode.TRUE:
            return lambda r: labels.get(v, v) if (v := r.get(name, "")) else ""

        def choice_all(r: Record) -> JSONValue:
            v = r.get(name, "")
            # an empty choice has a null display value (recorded on a real instance)
            return {"display_value": labels.get(v, v) if v else None, "value": v}

        return choice_all

    def _reference(self, target: str, name: str) -> Callable[[Record], JSONValue]:
        prefix = f"{self.link_base}{target}/"
        display_of = self.display_of
        if self.mode == DisplayMode.FALSE:
            if self.exclude_link:
                return lambda r: r.get(name, "")
            return lambda r: {"link": prefix + v, "value": v} if (v := r.get(name, "")) else ""
        if self.mode == DisplayMode.TRUE:
            if self.exclude_link:
                return lambda r: display_of(target, r.get(name, ""))

            def true_linked(r: Record) -> JSONValue:
                v = r.get(name, "")
                if not v:
                    return ""
                return {"display_value": display_of(target, v), "link": prefix + v}

            return true_linked
        if self.exclude_link:

            def all_plain(r: Record) -> JSONValue:
                v = r.get(name, "")
                return {"display_value": display_of(target, v), "value": v}

            return all_plain

        def all_linked(r: Record) -> JSONValue:
            v = r.get(name, "")
            if not v:
                return {"display_value": "", "value": ""}
            return {"display_value": display_of(target, v), "value": v, "link": prefix + v}

        return all_linked
