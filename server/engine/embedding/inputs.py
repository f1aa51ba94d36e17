"""Turning an embedding or rerank request into token sequences that can never overrun a batch.

Runs in the caller's thread (it only reads the vocabulary), before anything is queued:
every sequence that leaves here fits the embedding context's physical batch, because
llama.cpp aborts the whole process when one sequence does not. Texts are tokenized as
llama-server does (the model's special tokens added, special tokens in the text parsed);
token lists are used as given, after a check that every id is in the vocabulary.
Errors name the field in the engine's terms (`input[2][5]`, `documents[1]`); each
dialect renames them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from server.engine.embedding.jobs import EmbedRequest, RankRequest
from server.errors import InvalidRequest


@dataclass(frozen=True)
class TokenFacts:
    """What tokenizing for embeddings needs to know of the model and its context."""

    tokenize: Callable[[str, bool], list[int]]  # (text, add the model's special tokens) -> ids; specials parsed
    n_vocab: int
    limit: int  # the most tokens one sequence may have
    add_eos: bool  # the model ends a tokenized text with its EOS (or SEP): kept when truncating
    bos: int | None  # rerank pairs: [BOS] query [EOS] [SEP] document [EOS], the tokens the model adds
    eos: int | None
    sep: int | None
    rerank_template: str | None = None  # the GGUF's "rerank" template, with {query} and {document}


def embed_sequences(request: EmbedRequest, facts: TokenFacts, max_inputs: int) -> list[list[int]]:
    """One token sequence per input; InvalidRequest naming the input that cannot be embedded."""
    if not request.inputs:
        raise InvalidRequest("'input' must not be empty", "input")
    if len(request.inputs) > max_inputs:
        raise InvalidRequest(f"'input' has {len(request.inputs)} items; at most {max_inputs} are allowed", "input")
    sequences = []
    for i, item in enumerate(request.inputs):
        where = "input" if request.single else f"input[{i}]"
        if isinstance(item, str):
            tokens = facts.tokenize(item, True)
            sequences.append(fit(tokens, where, facts.limit, request.truncate, facts.add_eos))
        else:
            check_ids(item, where, facts.n_vocab)
            sequences.append(fit(list(item), where, facts.limit, request.truncate, False))
    return sequences


def rank_sequences(request: RankRequest, facts: TokenFacts, max_inputs: int) -> list[list[int]]:
    """One sequence per document: the query and the document as the model reads a pair."""
    if not request.documents:
        raise InvalidRequest("'documents' must not be empty", "documents")
    if len(request.documents) > max_inputs:
        raise InvalidRequest(
            f"'documents' has {len(request.documents)} items; at most {max_inputs} are allowed", "documents"
        )
    return [_pair(request, i, facts) for i in range(len(request.documents))]


def _pair(request: RankRequest, i: int, facts: TokenFacts) -> list[int]:
    where, document = f"documents[{i}]", request.documents[i]
    if facts.rerank_template is not None:
        text = facts.rerank_template.replace("{query}", request.query).replace("{document}", document)
        return fit(facts.tokenize(text, False), where, facts.limit, request.truncate, False)
    eos = facts.eos if facts.eos is not None else facts.sep
    head = [facts.bos] if facts.bos is not None else []
    head += facts.tokenize(request.query, False)
    head += [eos] if eos is not None else []
    head += [facts.sep] if facts.sep is not None else []
    tail = [eos] if eos is not None else []
    room = facts.limit - len(head) - len(tail)
    body = facts.tokenize(document, False)
    if room < 1:
        n = len(head) + len(tail) + 1
        raise InvalidRequest(
            f"'query' is too long: with a document it takes at least {n} tokens, more than the model's {facts.limit}",
            "query",
        )
    if len(body) > room and not request.truncate:
        raise _too_long(where, len(head) + len(body) + len(tail), facts.limit)
    sequence = head + body[:room] + tail
    if not sequence:
        raise InvalidRequest(f"'{where}' is empty: it has no tokens to rank", where)
    return sequence


def fit(tokens: list[int], where: str, limit: int, truncate: bool, keep_last: bool) -> list[int]:
    """`tokens` cut to `limit` (keeping the last one when the model added it: its EOS or SEP),
    or InvalidRequest naming `where` and the count when it is too long and not to be cut."""
    if not tokens:
        raise InvalidRequest(f"'{where}' is empty: it has no tokens to embed", where)
    if len(tokens) <= limit:
        return tokens
    if not truncate:
        raise _too_long(where, len(tokens), limit)
    return tokens[: limit - 1] + tokens[-1:] if keep_last else tokens[:limit]


def check_ids(tokens: tuple[int, ...], where: str, n_vocab: int) -> None:
    for j, t in enumerate(tokens):
        if type(t) is not int or not 0 <= t < n_vocab:  # llama.cpp would read past its vocabulary
            raise InvalidRequest(f"'{where}[{j}]' must be a token id from 0 to {n_vocab - 1}", f"{where}[{j}]")


def _too_long(where: str, n: int, limit: int) -> InvalidRequest:
    return InvalidRequest(f"'{where}' has {n} tokens, more than the model's context of {limit} tokens", where)
