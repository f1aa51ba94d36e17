"""A request's grammar, as the decoder takes it: GBNF text that llama.cpp has parsed.

Runs in the caller's thread (the engine's submit), so a schema or grammar that
cannot be enforced is a 400 before the request waits in the queue. Errors name
the engine's fields, `schema` (with the path of the keyword inside it, e.g.
`schema.properties.age.multipleOf`) or `grammar`; each dialect renames them.
"""

from __future__ import annotations

from typing import Callable

from server.engine.constraints.grammar import GrammarError
from server.engine.request import Grammar, Message, Request
from server.errors import InvalidRequest
from server.model.schema_grammar import SchemaError, schema_to_gbnf
from server.model.tools import answer_schema, tool_conversation


def conversation(request: Request, messages: list[Message]) -> list[Message]:
    """The messages as the chat template gets them: tools, calls and results written out."""
    if request.tools or any(m.role == "tool" or m.tool_calls for m in messages):
        return tool_conversation(messages, request.tools, request.tool_choice)
    return messages


def grammar_of(request: Request) -> Grammar | None:
    """What the answer must match: the request's grammar, or with tools in use the tool
    format (a direct response then matches the request's schema, if it has one)."""
    grammar = request.grammar
    if not request.uses_tools:
        return grammar
    if grammar is not None and grammar.gbnf is not None:
        raise InvalidRequest("'grammar' cannot be combined with tools", "grammar")
    response = grammar.schema if grammar is not None else None
    return Grammar(schema=answer_schema(request.tools, request.tool_choice, response))


def gbnf_for(grammar: Grammar, check: Callable[[str], None]) -> str:
    """GBNF for `grammar`, checked by `check` (the decoder's parse); InvalidRequest naming the field."""
    if grammar.gbnf is not None:
        field, text = "grammar", grammar.gbnf
    else:
        field = "schema"
        try:
            text = schema_to_gbnf(grammar.schema)
        except SchemaError as exc:
            where = f"{field}.{exc.path}" if exc.path and not exc.path.startswith("[") else field + exc.path
            raise InvalidRequest(f"'{where}': {exc.message}", where) from None
    try:
        check(text)
    except GrammarError as exc:
        raise InvalidRequest(f"'{field}' is not a grammar llama.cpp accepts: {exc}", field) from None
    return text
