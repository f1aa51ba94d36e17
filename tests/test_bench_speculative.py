"""The speculative bench's sides and verdicts (bench/speculative.py, bench/_speculative_report.py).

Each side must start its server with the same draft settings as its counterpart on the other server
(draft length, the draft file, its layers on the GPU), and the report must compare each speculative mode
with its own server's plain decoding. Checked on the settings each side gets and on rows whose ratios
are known; the real runs are the bench's own.
"""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.append(str(BENCH))

import _speculative_report as report  # noqa: E402
import speculative  # noqa: E402

MODEL, DRAFT = Path("/m/target.gguf"), Path("/m/small.gguf")


def _args(n_gpu_layers: int = 99) -> Namespace:
    return Namespace(model=MODEL, draft_model=DRAFT, draft_max=16, n_gpu_layers=n_gpu_layers)


def _flag(argv: list, name: str):
    return argv[argv.index(name) + 1]


def test_draft_sides_use_the_model_itself_or_the_draft_model():
    a = _args()
    assert speculative.draft_file("ours-draft-self", a) == MODEL
    assert speculative.draft_file("llama-server-draft-self", a) == MODEL
    assert speculative.draft_file("ours-draft", a) == DRAFT
    assert speculative.draft_file("llama-server-draft", a) == DRAFT
    assert speculative.draft_file("ours-ngram", a) is None


def test_ours_and_llama_server_get_the_same_draft_settings():
    a = _args()
    for mode, path in (("draft-self", MODEL), ("draft", DRAFT)):
        env = speculative.spec_env(f"ours-{mode}", a)
        argv = speculative.spec_argv(f"llama-server-{mode}", a)
        assert env["LLAMA_SERVER_SPECULATIVE"] == "draft"
        assert env["LLAMA_SERVER_DRAFT_MODEL"] == str(path) and _flag(argv, "--model-draft") == path
        assert env["LLAMA_SERVER_DRAFT_MAX"] == "16" and _flag(argv, "--spec-draft-n-max") == 16
        assert env["LLAMA_SERVER_DRAFT_N_GPU_LAYERS"] == "99" and _flag(argv, "--spec-draft-ngl") == 99
        assert _flag(argv, "--spec-type") == "draft-simple"


def test_all_layers_is_said_in_each_servers_words():
    # Ours reads -1 as every layer; llama-server reads -1 as "fit", so it gets "all".
    a = _args(n_gpu_layers=-1)
    assert speculative.spec_env("ours-draft", a)["LLAMA_SERVER_DRAFT_N_GPU_LAYERS"] == "-1"
    assert _flag(speculative.spec_argv("llama-server-draft", a), "--spec-draft-ngl") == "all"


def test_plain_and_ngram_sides_keep_their_settings():
    a = _args()
    assert speculative.spec_env("ours-off", a) == {"LLAMA_SERVER_SPECULATIVE": "off"}
    assert speculative.spec_env("ours-ngram", a) == {
        "LLAMA_SERVER_SPECULATIVE": "ngram",
        "LLAMA_SERVER_DRAFT_MAX": "16",
    }
    assert speculative.spec_argv("llama-server-off", a) == []
    assert speculative.spec_argv("llama-server-ngram", a) == ["--spec-type", "ngram-mod", "--spec-ngram-mod-n-max", 16]
    assert speculative.spec_env("llama-server-draft", a) == {}
    assert speculative.spec_argv("ours-draft", a) == []


def _row(server: str, rnd: int, tps: float, clients: int = 1) -> dict:
    return {
        "server": server,
        "round": rnd,
        "clients": clients,
        "tokens_per_s": tps,
        "completion_tokens": 512,
        "errors": 0,
        "drafted": 0,
        "accepted": 0,
        "texts": {},
    }


def test_each_mode_is_compared_with_its_own_servers_plain_decoding():
    raw = []
    for r in range(3):
        raw += [_row("ours-off", r, 100.0), _row("ours-draft", r, 50.0)]
        raw += [_row("llama-server-off", r, 200.0), _row("llama-server-draft", r, 50.0)]
    assert report.ratios(raw, "ours-draft", "ours-off", 1) == [0.5, 0.5, 0.5]
    assert report.speedup_vs_llama(raw, 1, "draft") == [2.0, 2.0, 2.0]  # 0.5 against 0.25
    names = ["ours-off", "ours-draft", "llama-server-off", "llama-server-draft"]
    summary = report.summarize(raw, names, [1])
    assert summary["ratios"]["1"]["ours-draft/llama-server-draft"]["median"] == 1.0
    assert summary["ratios"]["1"]["our speed-up / llama-server's (draft)"]["median"] == 2.0
    assert "ours-ngram/ours-off" not in summary["ratios"]["1"]  # sides not run are not compared


def test_sampled_runs_ask_both_servers_for_the_same_sampler():
    """At temperature 0 the targets' greedy bodies stand; above it every request carries the same
    temperature, seed and truncation, since the two servers' defaults differ."""
    assert speculative.sampling(Namespace(temperature=0.0, seed=7)) == {}
    extra = speculative.sampling(Namespace(temperature=0.8, seed=3))
    assert extra == {"temperature": 0.8, "seed": 3, "top_k": 40, "top_p": 0.95, "min_p": 0.05}


METRICS = """# HELP llama_server_draft_kind_tokens_total Tokens drafted of this kind
# TYPE llama_server_draft_kind_tokens_total counter
llama_server_draft_kind_tokens_total{kind="own-12",model="smollm2"} 40.0
llama_server_draft_kind_tokens_total{kind="pool",model="smollm2"} 6.0
llama_server_draft_kind_accepted_total{kind="own-12",model="smollm2"} 31.0
llama_server_draft_kind_refused_total{kind="pool",model="smollm2"} 9.0
llama_server_draft_tokens_total{model="smollm2"} 46.0
"""


def test_per_kind_counters_are_read_from_the_metrics_page_and_taken_per_pass():
    kinds = speculative.parse_kinds(METRICS)
    assert kinds == {"own-12": {"tokens": 40, "accepted": 31}, "pool": {"tokens": 6, "refused": 9}}
    before = {"own-12": {"tokens": 30, "accepted": 31}, "pool": {"tokens": 6, "refused": 9}}
    assert speculative.kinds_delta(kinds, before) == {"own-12": {"tokens": 10, "accepted": 0}}  # pool: no change
    runs = [{"per_kind": {"pool": {"tokens": 2}}}, {"per_kind": {"pool": {"tokens": 3}, "own-2-3": {"refused": 1}}}]
    assert report.per_kind(runs) == {"own-2-3": {"refused": 1}, "pool": {"tokens": 5}}


def test_goals_follow_the_prompt_set():
    raw = [
        {
            "server": s,
            "round": r,
            "clients": 1,
            "errors": 0,
            "tokens_per_s": v,
            "completion_tokens": 10,
            "drafted": 0,
            "accepted": 0,
            "texts": {},
        }
        for r in range(3)
        for s, v in (("ours-ngram", 99.0), ("ours-off", 100.0))
    ]
    assert report.summarize(raw, ["ours-ngram", "ours-off"], [1], "free")["goals_ours_ngram_over_off"]["1"]["met"]
    assert not report.summarize(raw, ["ours-ngram", "ours-off"], [1], "edit")["goals_ours_ngram_over_off"]["1"]["met"]
