"""Which JSON Schema keywords a constrained answer honours: each one enforced, or refused.

An answer "validates" only if every assertion in its schema was enforced while it
was generated, so a keyword we cannot enforce is an error naming it, never
silently dropped. `check_schema` walks a schema (a JSON document, nothing fetched)
and raises SchemaError with the path of the first problem, e.g.
`properties.tags.uniqueItems`; annotations (title, description, ...) are accepted
and ignored, as they assert nothing.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from server.model.decimal_range import RangeError, as_decimal, number_range
from server.model.schema_pattern import PatternError, check_pattern

ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$schema",
    "$id",
    "$defs",
    "definitions",
}
TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}
BY_TYPE = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "prefixItems", "minItems", "maxItems"},
    "string": {"minLength", "maxLength", "pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
}
BY_TYPE["integer"] = BY_TYPE["number"]
GENERIC = {"type", "enum", "const", "anyOf", "allOf", "$ref"}
KNOWN = ANNOTATIONS | GENERIC | set().union(*BY_TYPE.values())
# String formats with a grammar, and the lengths their values can have (None: unbounded).
FORMAT_LENGTHS = {"date": (10, 10), "time": (9, 18), "date-time": (20, 29), "uuid": (36, 36), "email": (6, 122)}
FORMAT_LENGTHS["uri"] = (8, 223)
MAX_LENGTH = 1000  # longest minLength/maxLength/minItems/maxItems: each unit is a grammar rule
# How many schemas deep a walk may go, counting each reference followed as a level: a chain of
# references ($defs.d0 -> d1 -> ...) is as long as the user likes, nesting in the body is not
# (server/http/body.py: 32 arrays and objects). Real schemas need a few; the converter's recursion
# (schema_grammar.py) stays far inside Python's limit at this depth.
MAX_SCHEMA_DEPTH = 32
# Levels the tool format puts around a user's schema (server/model/tools.py): the check of the
# whole answer schema starts that much below zero, so a user's schema within the limit stays so.
TOOL_FORMAT_DEPTH = 8
# Optional properties of one object: the converter recurses once for each (and does quadratic work).
MAX_OPTIONAL_PROPERTIES = 128


class SchemaError(ValueError):
    """A schema we cannot enforce; `path` locates the keyword (dot-separated, may be "")."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


# check_schema applied to a sub-schema at a path: how the per-type checks recurse.
Visit = Callable[[Any, str], None]


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key


def check_schema(schema: Any, path: str = "", root: Any = None, refs: set[str] | None = None, depth: int = 0) -> None:
    """Raise SchemaError for the first keyword this node (or one below it) asks that we cannot enforce.
    `root` is the document references resolve in; `refs` the references already checked; `depth`
    how many schemas (and references) lead here: the walk stops at MAX_SCHEMA_DEPTH."""
    root = schema if root is None else root
    refs = set() if refs is None else refs
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(path, f"the schema nests more than {MAX_SCHEMA_DEPTH} schemas deep (references included)")
    if schema is True or schema == {}:
        return
    if not isinstance(schema, dict):
        raise SchemaError(path, "a schema must be an object")
    unknown = sorted(set(schema) - KNOWN)
    if unknown:
        raise SchemaError(_join(path, unknown[0]), f"the keyword '{unknown[0]}' cannot be enforced while generating")
    asserted = set(schema) - ANNOTATIONS
    types = _types(schema, path)
    for kind in ("$ref", "anyOf", "allOf"):
        if kind in schema and asserted - {kind}:
            other = sorted(asserted - {kind})[0]
            raise SchemaError(_join(path, other), f"'{other}' beside '{kind}' is not supported; move it inside")
    if "$ref" in schema:
        return _check_ref(schema["$ref"], _join(path, "$ref"), root, refs, depth)
    for kind in ("anyOf", "allOf"):
        if kind in schema:
            items = schema[kind]
            if not isinstance(items, list) or not items or (kind == "allOf" and len(items) != 1):
                need = "a non-empty array" if kind == "anyOf" else "an array of exactly one schema (merge the others)"
                raise SchemaError(_join(path, kind), f"'{kind}' must be {need}")
            for i, item in enumerate(items):
                check_schema(item, _join(_join(path, kind), i), root, refs, depth + 1)
            return
    if "enum" in schema or "const" in schema:
        return _check_values(schema, path, types)
    for kind in types:
        if kind in CHECKS:
            CHECKS[kind](schema, path, lambda sub, where: check_schema(sub, where, root, refs, depth + 1))


def _types(schema: dict[str, Any], path: str) -> list[str]:
    """The node's types: declared, else implied by its keywords (properties -> object)."""
    declared = schema.get("type")
    if declared is None:
        implied = _implied(schema)
        if len(implied) > 1:
            raise SchemaError(path, f"keywords of several types ({', '.join(implied)}) without a 'type'")
        return implied
    names = declared if isinstance(declared, list) else [declared]
    if not names or any(not isinstance(t, str) or t not in TYPES for t in names):
        raise SchemaError(_join(path, "type"), f"'type' must be one of {', '.join(sorted(TYPES))}, or a list of them")
    for key in set(schema) & set().union(*BY_TYPE.values()):
        if not any(key in BY_TYPE.get(t, ()) for t in names):
            raise SchemaError(_join(path, key), f"'{key}' does not apply to type {'/'.join(names)}")
    return names


def _implied(schema: dict[str, Any]) -> list[str]:
    return [t for t in ("object", "array", "string", "number") if BY_TYPE[t] & set(schema)]


def implied_type(schema: dict[str, Any]) -> str | None:
    """The type a node's keywords imply when it declares none (properties: object), if just one."""
    implied = _implied(schema) if "type" not in schema else []
    return implied[0] if len(implied) == 1 else None


def _check_ref(ref: Any, path: str, root: Any, refs: set[str], depth: int) -> None:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise SchemaError(path, "only local references ('#/$defs/Name') are supported")
    if ref in refs:  # checked already, or being checked (a recursive schema)
        return
    refs.add(ref)
    node = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise SchemaError(path, f"the reference '{ref}' points nowhere")
        node = node[part]
    check_schema(node, ref[2:].replace("/", "."), root, refs, depth + 1)


def _check_values(schema: dict[str, Any], path: str, types: list[str]) -> None:
    extra = set(schema) - ANNOTATIONS - {"type", "enum", "const"}
    if extra:
        other = sorted(extra)[0]
        raise SchemaError(_join(path, other), f"'{other}' beside 'enum'/'const' is not supported")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise SchemaError(_join(path, "enum"), "'enum' must be a non-empty array")
    values = schema["enum"] if "enum" in schema else [schema["const"]]
    if types and not any(json_type_matches(v, t) for v in values for t in types):
        raise SchemaError(path, f"no value of 'enum'/'const' has type {'/'.join(types)}")


def json_type_matches(value: Any, kind: str) -> bool:
    """Whether a JSON value has a JSON Schema type (an integral float counts as an integer)."""
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    types: dict[str, type | tuple[type, ...]] = {"number": (int, float), "string": str, "array": list, "object": dict}
    return isinstance(value, types[kind])


def _count(schema: dict[str, Any], key: str, path: str) -> int | None:
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LENGTH:
        raise SchemaError(_join(path, key), f"'{key}' must be an integer from 0 to {MAX_LENGTH}")
    return int(value)


def _range(schema: dict[str, Any], path: str, low: str, high: str) -> tuple[int | None, int | None]:
    lo, hi = _count(schema, low, path), _count(schema, high, path)
    if lo is not None and hi is not None and lo > hi:
        raise SchemaError(_join(path, low), f"'{low}' is greater than '{high}'")
    return lo, hi


def _check_object(schema: dict[str, Any], path: str, visit: Visit) -> None:
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        raise SchemaError(_join(path, "properties"), "'properties' must be an object")
    for name, sub in props.items():
        visit(sub, _join(_join(path, "properties"), name))
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError(_join(path, "required"), "'required' must be an array of property names")
    missing = [r for r in required if r not in props]
    if missing:
        raise SchemaError(_join(path, "required"), f"'{missing[0]}' is required but not among 'properties'")
    if len(set(props) - set(required)) > MAX_OPTIONAL_PROPERTIES:
        raise SchemaError(
            _join(path, "properties"), f"at most {MAX_OPTIONAL_PROPERTIES} properties may be optional (not 'required')"
        )
    extra = schema.get("additionalProperties", False)
    if not isinstance(extra, bool):
        visit(extra, _join(path, "additionalProperties"))


def _check_array(schema: dict[str, Any], path: str, visit: Visit) -> None:
    lo, hi = _range(schema, path, "minItems", "maxItems")
    if "prefixItems" in schema:
        items = schema["prefixItems"]
        if not isinstance(items, list) or not items:
            raise SchemaError(_join(path, "prefixItems"), "'prefixItems' must be a non-empty array")
        if schema.get("items", False) is not False:
            raise SchemaError(_join(path, "items"), "'items' beside 'prefixItems' must be false (exactly the prefix)")
        if (lo is not None and lo > len(items)) or (hi is not None and hi < len(items)):
            raise SchemaError(_join(path, "prefixItems"), "answers hold just the prefix items: min/maxItems forbid it")
        for i, item in enumerate(items):
            visit(item, _join(_join(path, "prefixItems"), i))
    elif "items" in schema:
        visit(schema["items"], _join(path, "items"))
    elif lo or hi is not None:
        raise SchemaError(_join(path, "minItems" if lo else "maxItems"), "item counts need an 'items' schema")


def _check_string(schema: dict[str, Any], path: str, visit: Visit) -> None:
    lo, hi = _range(schema, path, "minLength", "maxLength")
    fmt, pattern = schema.get("format"), schema.get("pattern")
    if pattern is not None:
        if fmt is not None or lo is not None or hi is not None:
            raise SchemaError(_join(path, "pattern"), "'pattern' with 'format' or lengths is not supported")
        if not isinstance(pattern, str):
            raise SchemaError(_join(path, "pattern"), "'pattern' must be a string")
        try:
            check_pattern(pattern)
        except PatternError as exc:
            raise SchemaError(_join(path, "pattern"), str(exc)) from None
    if fmt is not None:
        if fmt not in FORMAT_LENGTHS:
            known = ", ".join(FORMAT_LENGTHS)
            raise SchemaError(_join(path, "format"), f"the format '{fmt}' is not supported (only {known})")
        shortest, longest = FORMAT_LENGTHS[fmt]
        if (lo is not None and lo > shortest) or (hi is not None and hi < longest):
            raise SchemaError(
                _join(path, "format"), f"'{fmt}' values are {shortest} to {longest} characters: the lengths forbid some"
            )


def _check_number(schema: dict[str, Any], path: str, visit: Visit) -> None:
    bounds = {}
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        value = schema.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SchemaError(_join(path, key), f"'{key}' must be a number")
        bounds[key] = as_decimal(value)
    integer = schema.get("type") == "integer" or schema.get("type") == ["integer"]
    try:
        lo, lo_incl, hi, hi_incl = numeric_bounds(bounds)
        number_range(lo, lo_incl, hi, hi_incl, integer, lambda name, body: name, "n")
    except RangeError as exc:
        raise SchemaError(path, str(exc)) from None


def numeric_bounds(bounds: dict[str, Any]) -> tuple[Any, bool, Any, bool]:
    """(lo, lo inclusive, hi, hi inclusive) from minimum/maximum/exclusive* (the tighter of each)."""
    lo, lo_incl, hi, hi_incl = bounds.get("minimum"), True, bounds.get("maximum"), True
    ex_lo, ex_hi = bounds.get("exclusiveMinimum"), bounds.get("exclusiveMaximum")
    if ex_lo is not None and (lo is None or ex_lo >= lo):
        lo, lo_incl = ex_lo, False
    if ex_hi is not None and (hi is None or ex_hi <= hi):
        hi, hi_incl = ex_hi, False
    return lo, lo_incl, hi, hi_incl


CHECKS = {"object": _check_object, "array": _check_array, "string": _check_string}
CHECKS["number"] = CHECKS["integer"] = _check_number
