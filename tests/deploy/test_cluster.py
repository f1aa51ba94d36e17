"""`make cluster` end to end: Debian's nginx in front of 2 real replicas serving Gemma 3 270M.

Answers plain and streamed through nginx; a conversation (X-Conversation-Id) stays on one
replica and reuses its cache; the body limit is MAX_BODY_BYTES; the metrics the autoscaler
reads exist. Then about a minute of 8 concurrent clients, plain and streamed, during which
one replica is killed with SIGKILL: no plain answer fails (nginx retries it on the other
replica), a stream cut by the kill ends in an error for its client, never a hang or a
stream that looks complete; the launcher starts the replica again, it gets no traffic while
it loads, and traffic reaches it once it is ready. Last, SIGTERM drains and stops it all.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.deploy.cluster_util import ROOT, run_cluster
from tests.deploy.conftest import free_ports
from tests.server.conftest import metric

pytestmark = pytest.mark.slow
SETTINGS = {
    "LLAMA_SERVER_N_CTX": "512",
    "LLAMA_SERVER_MAX_TOKENS": "16",
    "LLAMA_SERVER_PARALLEL": "2",
    "LLAMA_SERVER_N_THREADS": "1",
    "LLAMA_SERVER_REQUEST_TIMEOUT": "120",
    "LLAMA_SERVER_MAX_BODY_BYTES": "8192",
}
LOAD_S, CLIENTS = 60, 8
# Long enough to be running when its replica is killed, short enough to finish on the other one.
LONG = {"query": "Count from 1 to 200, one number per line.", "temperature": 0, "max_tokens": 100}


@pytest.fixture(scope="module")
def cluster(nginx, gemma_gguf, tmp_path_factory):
    with run_cluster(gemma_gguf, tmp_path_factory.mktemp("cluster"), free_ports(3), **SETTINGS) as run:
        yield run


def replica_url(cluster, index: int) -> str:
    return f"http://127.0.0.1:{cluster.state()['replicas'][index]['port']}"


def log_entries(cluster, conversation: str) -> list[dict]:
    time.sleep(0.2)  # nginx writes a line when the request is finalized
    return [e for e in cluster.access_log() if e["conversation"] == conversation]


def test_plain_and_streamed_answers_through_nginx(cluster):
    body = {"query": "Name a color.", "temperature": 0, "seed": 1, "max_tokens": 8}
    plain = requests.post(f"{cluster.base}/api/respond", json=body, timeout=60)
    assert plain.status_code == 200, plain.text
    assert plain.json()["usage"]["completion_tokens"] > 0
    with requests.post(f"{cluster.base}/api/respond", json={**body, "stream": True}, stream=True, timeout=60) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith(b"data: ")]
    assert events[-1]["type"] == "done"
    assert "".join(e["text"] for e in events[:-1]) == plain.json()["response"]
    assert requests.get(f"{cluster.base}/v1/models", timeout=10).status_code == 200


def test_a_conversation_stays_on_one_replica_and_reuses_its_cache(cluster):
    conversation, history = f"conv-{uuid.uuid4()}", []
    for question in ("Name a planet.", "Name another one.", "And a third?"):
        r = requests.post(
            f"{cluster.base}/api/respond",
            headers={"X-Conversation-Id": conversation},
            timeout=60,
            json={"query": question, "history": history, "temperature": 0, "max_tokens": 8},
        )
        assert r.status_code == 200
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": r.json()["response"]}]
    (upstream,) = {e["upstream"] for e in log_entries(cluster, conversation)}
    replica = requests.get(f"http://{upstream}/metrics", timeout=10).text
    assert metric(replica, "llama_server_prompt_tokens_cached_total") > 0  # later turns found their prefix


def test_requests_spread_over_both_replicas(cluster):
    ids = [f"spread-{uuid.uuid4()}" for _ in range(16)]
    for conversation in ids:
        r = requests.post(
            f"{cluster.base}/api/respond",
            headers={"X-Conversation-Id": conversation},
            json={"query": "Hi.", "max_tokens": 1},
            timeout=60,
        )
        assert r.status_code == 200
    time.sleep(0.2)
    used = {e["upstream"] for e in cluster.access_log() if e["conversation"] in ids}
    assert len(used) == 2  # hashing 16 conversations put some on each replica


def test_the_body_limit_is_max_body_bytes(cluster):
    too_big = requests.post(
        f"{cluster.base}/api/respond",
        data=b"{" + b" " * 8192 + b"}",
        timeout=10,
        headers={"Content-Type": "application/json"},
    )
    assert too_big.status_code == 413 and too_big.json()["error"]["type"] == "body_too_large"
    # Just under the limit it reaches a replica, which answers for itself (the prompt is too long for N_CTX).
    fits = requests.post(f"{cluster.base}/api/respond", json={"query": "word " * 1600}, timeout=60)
    assert fits.status_code == 400 and fits.json()["error"]["type"] == "prompt_too_long"


def test_the_metrics_the_manifests_use_exist(cluster):
    used = set()
    for path in (ROOT / "deploy").rglob("*.yaml"):
        used |= set(re.findall(r"llama_server_\w+", path.read_text()))
    exported = requests.get(f"{replica_url(cluster, 0)}/metrics", timeout=10).text
    assert used and all(re.search(rf"^{name}\b", exported, flags=re.MULTILINE) for name in used), used


def test_the_container_healthcheck_passes_against_a_ready_replica(cluster):
    port = cluster.state()["replicas"][0]["port"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "healthcheck.py")],
        capture_output=True,
        env={"LLAMA_SERVER_PORT": str(port)},
        check=False,
    )
    assert result.returncode == 0, result.stderr


def one_request(base: str, stream: bool, body: dict, conversation: str | None = None, timeout: float = 60) -> dict:
    """One request, recorded: status, whether it completed, and the exception that ended it, if any."""
    record = {"stream": stream, "start": time.monotonic(), "status": None, "complete": False, "error": None}
    headers = {"X-Conversation-Id": conversation} if conversation else {}
    try:
        with requests.post(
            f"{base}/api/respond", json={**body, "stream": stream}, headers=headers, stream=stream, timeout=timeout
        ) as r:
            record["status"] = r.status_code
            if stream:
                events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith(b"data: ")]
                record["complete"] = bool(events) and events[-1]["type"] == "done"
            else:
                record["complete"] = r.status_code == 200 and r.json()["usage"]["completion_tokens"] > 0
    except requests.RequestException as exc:
        record["error"] = type(exc).__name__
    record["end"] = time.monotonic()
    return record


def load(base: str, index: int, stop: threading.Event, records: list) -> None:
    n = 0
    while not stop.is_set():
        body = {"query": f"Say something about the number {index * 1000 + n}.", "max_tokens": 8 + n % 17}
        records.append(one_request(base, stream=(index + n) % 2 == 0, body=body))
        n += 1


def session_pids(session: int) -> list[int]:
    """Processes (not zombies) whose session is `session`: a replica's gunicorn master and worker."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def kill_during_answers(cluster, victim: dict, victim_id: str) -> float:
    """Kill the victim replica (SIGKILL, master and worker) while it sends a stream and works on a
    plain answer, both pinned to it by their conversation id; check what each client sees. Returns
    when it was killed."""
    plain = {}
    plain_thread = threading.Thread(
        target=lambda: plain.update(one_request(cluster.base, False, LONG, victim_id, timeout=150))
    )
    plain_thread.start()
    stream = requests.post(
        f"{cluster.base}/api/respond",
        json={**LONG, "stream": True},
        stream=True,
        timeout=30,
        headers={"X-Conversation-Id": victim_id},
    )
    lines = stream.iter_lines()
    assert next(line for line in lines if line.startswith(b"data: "))  # it is generating
    time.sleep(0.5)
    os.killpg(victim["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # cut, not closed as if complete
        for line in lines:
            assert b'"done"' not in line
    assert time.monotonic() - killed_at < 10  # promptly, not after a timeout
    plain_thread.join(160)
    assert plain["status"] == 200 and plain["complete"], plain  # nginx retried it on the other replica
    return killed_at


def check_clients(records: list[dict], killed_at: float) -> None:
    plain = [r for r in records if not r["stream"]]
    streams = [r for r in records if r["stream"]]
    assert len(records) > 50 and plain and streams
    assert all(r["status"] == 200 and r["complete"] for r in plain), [r for r in plain if not r["complete"]]
    for r in streams:  # complete, or cut by the kill with an error the client sees
        assert r["complete"] or (
            r["error"] in ("ChunkedEncodingError", "ConnectionError") and r["start"] <= killed_at <= r["end"]
        ), r


def check_balancer_log(entries: list[dict], victim_addr: str, back: dict) -> None:
    """From nginx's side: no replica was asked while loading, and the restarted one answers again."""
    assert not [e for e in entries if "503" in e["upstream_status"]]
    while_loading = [
        e
        for e in entries
        if victim_addr in e["upstream"] and back["started_at"] <= e["time"] - e["request_time"] < back["ready_at"]
    ]
    assert not while_loading
    after = [e for e in entries if e["upstream"] == victim_addr and e["time"] > back["ready_at"] and e["status"] == 200]
    assert len(after) >= 3, f"{len(after)} answers from the restarted replica"


def test_a_replica_killed_under_load_costs_no_plain_answer_and_comes_back(cluster):
    victim_id = f"victim-{uuid.uuid4()}"  # its conversation id pins requests to one replica
    assert one_request(cluster.base, False, {"query": "Hi.", "max_tokens": 1}, victim_id)["complete"]
    (victim_addr,) = {e["upstream"] for e in log_entries(cluster, victim_id)}
    victim = next(r for r in cluster.state()["replicas"] if f"127.0.0.1:{r['port']}" == victim_addr)

    stop, records = threading.Event(), []
    clients = [threading.Thread(target=load, args=(cluster.base, i, stop, records)) for i in range(CLIENTS)]
    started = time.monotonic()
    for c in clients:
        c.start()
    try:
        time.sleep(LOAD_S / 4)
        killed_at = kill_during_answers(cluster, victim, victim_id)
        state = cluster.wait_ready(limit=90, restarts=1)
        back = next(r for r in state["replicas"] if r["index"] == victim["index"])
        assert back["pid"] != victim["pid"]
        time.sleep(max(started + LOAD_S - time.monotonic(), 15))  # traffic keeps coming after it is back
    finally:
        stop.set()
        for c in clients:
            c.join(70)
    check_clients(records, killed_at)
    check_balancer_log(cluster.access_log(), victim_addr, back)


def test_sigterm_drains_then_stops_everything(cluster):
    state = cluster.state()
    pids = [state["nginx_pid"]] + [pid for r in state["replicas"] for pid in session_pids(r["pid"])]
    assert len(pids) >= 5  # nginx, and master + worker of each replica
    answer = {}
    asking = threading.Thread(
        target=lambda: answer.update(
            one_request(cluster.base, False, {"query": "Tell me about the sea.", "max_tokens": 48})
        )
    )
    asking.start()
    time.sleep(0.3)
    cluster.proc.send_signal(signal.SIGTERM)
    asking.join(60)
    assert answer["status"] == 200 and answer["complete"], answer  # the answer in flight finished
    assert cluster.proc.wait(60) == 0
    left = [pid for r in state["replicas"] for pid in session_pids(r["pid"])] + session_pids(state["nginx_pid"])
    assert not left, left
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{cluster.base}/api/health", timeout=5)
