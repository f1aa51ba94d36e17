"""JSON Schema -> GBNF: the grammar a constrained answer is generated under.

llama-cpp-python's converter (`llama_cpp.llama_grammar`, the one behind
`json_schema_to_gbnf`) does the bulk of the work. Around it: every keyword is first
checked (server/model/schema_check.py: enforced, or refused with its path), and the
converter is completed where it would let an answer out of its schema:
  - integer and number bounds (minimum, maximum, exclusive*) as decimal-range
    grammars (server/model/decimal_range.py); the converter ignores them;
  - strings without raw control characters, so that json.loads accepts them
    (the converter's string allows a raw newline);
  - a list of types keeps the node's other keywords in each alternative, and
    enum/const values are filtered by the node's type (the converter drops both);
  - `{}` (no assertion) is any JSON value, not only an object;
  - email and uri formats, with bounded lengths;
  - lengths and item counts as GBNF counts (`{0,1000}`), not one nested group per unit;
  - a pattern's alternatives kept inside its string (patterns are checked first:
    server/model/schema_pattern.py).
Whitespace between tokens is bounded as in llama.cpp's own converter (a space, or at
most two line breaks and 20 spaces or tabs), so a structure never runs on in blank lines.
The converter recurses once per schema it visits, following references: the check bounds
that (MAX_SCHEMA_DEPTH), and the conversion stops at a depth of its own besides, with room
for the levels the tool format adds around a user's schema (server/model/tools.py).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from llama_cpp.llama_grammar import (
    INVALID_RULE_CHARS_RE,
    PRIMITIVE_RULES,
    RESERVED_NAMES,
    BuiltinRule,
    SchemaConverter,
)

from server.model.decimal_range import as_decimal, number_range
from server.model.schema_check import (
    ANNOTATIONS,
    MAX_SCHEMA_DEPTH,
    TOOL_FORMAT_DEPTH,
    SchemaError,
    check_schema,
    implied_type,
    json_type_matches,
    numeric_bounds,
)

__all__ = ["schema_to_gbnf", "SchemaError", "JSON_OBJECT"]

JSON_OBJECT: dict[str, Any] = {"type": "object"}  # any JSON object: OpenAI's json_object, Ollama's "json"
SAFE_CHAR = BuiltinRule(r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})', [])
LABEL = "[a-z0-9] ([a-z0-9-]{0,18} [a-z0-9])?"  # a DNS label, at most 20 characters
EXTRA_FORMATS = {
    "email": f'[A-Za-z0-9_+-]{{1,16}} ("." [A-Za-z0-9_+-]{{1,16}}){{0,2}} "@" {LABEL} ("." {LABEL}){{0,2}} "." '
    "[a-z]{2,8}",
    "uri": f'"http" "s"? "://" {LABEL} ("." {LABEL}){{0,3}} ("/" [A-Za-z0-9._~%-]{{1,32}}){{0,4}}',
}
BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
# Between tokens: nothing, a space, or a line break and indentation, as llama.cpp's own converter
# has it. Models like to indent JSON; refusing every line break (the Python converter's `" "?`)
# makes the grammar refuse the model's first choice far more often, and each refusal costs a mask.
SPACE = '| " " | "\\n"{1,2} [ \\t]{0,20}'
# Visits nested in one another: a multi-type node visits itself once more per type.
MAX_VISIT_DEPTH = 2 * (MAX_SCHEMA_DEPTH + TOOL_FORMAT_DEPTH)
# A schema of a few kilobytes can ask for megabytes of rules (64 tools, each deep, with many
# optional properties: rule names grow with the depth): the conversion stops past this size.
MAX_GRAMMAR_CHARS = 4_000_000


def schema_to_gbnf(schema: Any) -> str:
    """The GBNF grammar (root rule `root`) of the JSON texts valid under `schema`; SchemaError
    (with the path of the keyword) for a schema we cannot enforce."""
    check_schema(schema, depth=-TOOL_FORMAT_DEPTH)  # checked as the user gave it, deeper here if in tools
    converter = _Converter()
    try:
        resolved = converter.resolve_refs(copy.deepcopy(schema), "schema")
        converter.visit(resolved, "")
    except SchemaError:
        raise
    except (AssertionError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SchemaError("", f"the schema cannot be turned into a grammar: {exc}") from None
    return converter.format_grammar()


class _Converter(SchemaConverter):
    """llama-cpp-python's converter with the additions listed in the module docstring."""

    def __init__(self) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        self._rules["space"] = SPACE
        self._depth, self._size = 0, 0
        self._sizes: dict[str, int] = {}  # each rule's length, as counted in _size
        self._ref_rules: dict[str, str] = {}

    def _add_rule(self, name: str, rule: str) -> str:
        key = super()._add_rule(name, rule)
        if self._sizes.get(key) != len(rule):  # a new rule (or a new text for it): count what it adds
            self._size += len(rule) - self._sizes.get(key, -len(key))
            self._sizes[key] = len(rule)
            if self._size > MAX_GRAMMAR_CHARS:
                raise SchemaError("", f"the schema makes a grammar of more than {MAX_GRAMMAR_CHARS:,} characters")
        return key

    def resolve_refs(self, schema: Any, url: str) -> Any:
        """Note every local reference's target. The base class skips the rest of a node that has
        a "$ref" (so a root "$ref" beside "$defs" left them unresolved), and reads "~1" and "~0"
        literally; this walk is a loop, and the check has vouched for every reference."""
        nodes = [schema]
        while nodes:
            node = nodes.pop()
            if isinstance(node, list):
                nodes.extend(node)
            elif isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/"):
                    target = schema
                    for part in ref[2:].split("/"):
                        target = target[part.replace("~1", "/").replace("~0", "~")]
                    self._refs[ref] = target
                nodes.extend(value for key, value in node.items() if key != "$ref")
        return schema

    def _resolve_ref(self, ref: str) -> str:
        # One rule per reference, under a name no other rule has: the base class took any rule of
        # the same name for it (a property named like the definition lent it its own rule).
        if ref not in self._ref_rules:
            key = INVALID_RULE_CHARS_RE.sub("-", f"ref-{ref.split('/')[-1]}")
            while key in self._rules:
                key += "-"
            self._ref_rules[ref] = key
            self._rules[key] = '""'  # taken while its schema is visited (which may refer to it again)
            self._rules[key] = self.visit(self._refs[ref], key + "-value")
        return self._ref_rules[ref]

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        return super()._add_primitive(name, SAFE_CHAR if rule is PRIMITIVE_RULES["char"] else rule)

    def visit(self, schema: Any, name: str) -> str:
        # Every nested visit comes through here (the base class calls self.visit): count them.
        if self._depth >= MAX_VISIT_DEPTH:
            raise SchemaError("", f"the schema nests more than {MAX_VISIT_DEPTH} schemas deep (references included)")
        self._depth += 1
        try:
            return self._visit(schema, name)
        finally:
            self._depth -= 1

    def _visit(self, schema: Any, name: str) -> str:
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
        if schema is True or not (set(schema) - ANNOTATIONS):
            return self._add_rule(rule_name, self._add_primitive("value", PRIMITIVE_RULES["value"]))
        if schema.get("items") == {}:  # any items: the base class reads an empty schema as none given
            schema = {**schema, "items": True}
        implied = implied_type(schema)
        if implied is not None:  # the base class knows no type from 'minimum' or 'required' alone
            schema = {**schema, "type": implied}
        if "allOf" in schema:  # exactly one item (checked): it is the schema
            return self.visit(schema["allOf"][0], name)
        kind = schema.get("type")
        if isinstance(kind, list):
            alternatives = [{**schema, "type": t} for t in kind if _has_value(schema, t)]
            if len(alternatives) == 1:
                return self.visit(alternatives[0], name)
            return self._add_rule(rule_name, self._generate_union_rule(name, alternatives))
        if "enum" in schema or "const" in schema:
            values = schema["enum"] if "enum" in schema else [schema["const"]]
            kept = [v for v in values if kind is None or json_type_matches(v, kind)]
            return self._add_rule(rule_name, " | ".join(self._generate_constant_rule(v) for v in kept))
        if kind in ("integer", "number") and any(schema.get(k) is not None for k in BOUNDS):
            bounds = {k: as_decimal(schema[k]) for k in BOUNDS if schema.get(k) is not None}
            lo, lo_incl, hi, hi_incl = numeric_bounds(bounds)
            expr = number_range(lo, lo_incl, hi, hi_incl, kind == "integer", self._add_rule, rule_name)
            return self._add_rule(rule_name, expr + " space")
        counted = self._counted(schema, name, rule_name)
        if counted is not None:
            return counted
        fmt = schema.get("format")
        if kind in (None, "string") and fmt in EXTRA_FORMATS:
            inner = self._add_rule(fmt, EXTRA_FORMATS[fmt])
            return self._add_rule(rule_name, f'"\\"" {inner} "\\"" space')
        return super().visit(schema, name)

    def _counted(self, schema: dict[str, Any], name: str, rule_name: str) -> str | None:
        """Strings with min/maxLength and arrays with min/maxItems, as GBNF counts: the base class
        nests one optional group per unit, which llama.cpp's parser refuses past 256 (grammar.py)."""
        kind = schema.get("type")  # None: the check has found the keywords of one type only
        keys = set(schema)
        if kind in (None, "string") and {"minLength", "maxLength"} & keys and not {"pattern", "format"} & keys:
            lo, hi = schema.get("minLength") or 0, schema.get("maxLength")
            if lo == 0 and hi is None:
                return None
            char = self._add_primitive("char", PRIMITIVE_RULES["char"])
            return self._add_rule(rule_name, f'"\\"" {char}{_count(lo, hi)} "\\"" space')
        if kind in (None, "array") and "items" in keys and {"minItems", "maxItems"} & keys:
            lo, hi = schema.get("minItems") or 0, schema.get("maxItems")
            item = self.visit(schema["items"], f"{name}{'-' if name else ''}item")
            if hi == 0:
                return self._add_rule(rule_name, '"[" space "]" space')
            more = f'("," space {item}){_count(max(lo - 1, 0), None if hi is None else hi - 1)}'
            inner = f"{item} {more}" if lo else f"({item} {more})?"
            return self._add_rule(rule_name, f'"[" space {inner} "]" space')
        return None

    def _visit_pattern(self, pattern: str, name: str) -> str:
        # Checked (schema_pattern.py); grouped whole, or a top-level '|' would leave one of the
        # string's quotes to each alternative.
        inner = pattern[1:-1]
        return super()._visit_pattern(f"^({inner})$" if inner else pattern, name)

    def _generate_constant_rule(self, value: Any) -> str:
        # ensure_ascii: a non-ASCII value is written with \u escapes, which every JSON reader takes.
        return self._format_literal(json.dumps(value))


def _count(lo: int, hi: int | None) -> str:
    return f"{{{lo},}}" if hi is None else f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"


def _has_value(schema: dict[str, Any], kind: str) -> bool:
    """Whether the alternative of type `kind` of a multi-type node can have any value."""
    if "enum" not in schema and "const" not in schema:
        return True
    values = schema["enum"] if "enum" in schema else [schema["const"]]
    return any(json_type_matches(v, kind) for v in values)
