"""deploy/k8s/: validated offline against Kubernetes 1.33's schemas, and consistent with the server.

kubernetes-validate checks every built-in object strictly (unknown fields are errors). KEDA's
ScaledObject is a custom resource with no schema there, so a small schema of the fields used
here (as KEDA documents them) checks it, including that trigger metadata values are strings.
Then what the schemas cannot see: probes on /api/health, a grace period that outlasts the
drain, memory sized from the model, selectors that match, and a GPU variant that differs from
the CPU one only where a GPU needs it.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

K8S_VERSION = "1.33.0"
K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
GIB = 1 << 30

SCALED_OBJECT = {  # keda.sh/v1alpha1 ScaledObject, the fields this project uses
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
                **{
                    k: {"type": "integer", "minimum": 0}
                    for k in ("minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod")
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "properties": {"behavior": {"type": "object"}},
                        }
                    },
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"type": "string"},
                            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}


def load(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(K8S.rglob("*.yaml")) for doc in load(path)]


def deployment(variant: str) -> dict:
    (doc,) = load(K8S / variant / "deployment.yaml")
    return doc


def container(variant: str) -> dict:
    return deployment(variant)["spec"]["template"]["spec"]["containers"][0]


def env(variant: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(variant)["env"]}


def quantity(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Gi|Mi)", text).groups()
    return int(number) * {"Gi": GIB, "Mi": 1 << 20}[unit]


def _case_id(v) -> str:
    return f"{v.parent.name}/{v.name}" if isinstance(v, Path) else v["kind"]


@pytest.mark.parametrize("path,doc", manifests(), ids=_case_id)
def test_manifest_is_valid(path, doc):
    if doc["kind"] == "ScaledObject":
        jsonschema.validate(doc, SCALED_OBJECT)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_probes_are_on_api_health_and_the_grace_period_outlasts_the_drain(variant):
    c, pod = container(variant), deployment(variant)["spec"]["template"]["spec"]
    (port,) = [p for p in c["ports"] if p["name"] == "http"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/api/health", "port": "http"}, probe
    assert port["containerPort"] == 8000  # the image's LLAMA_SERVER_PORT
    sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    # gunicorn waits REQUEST_TIMEOUT + 15 s for answers in flight after SIGTERM (server/gunicorn.conf.py).
    drain = sleep + float(env(variant)["LLAMA_SERVER_REQUEST_TIMEOUT"]) + 15
    assert pod["terminationGracePeriodSeconds"] >= drain


def test_cpu_memory_is_sized_from_the_model():
    # Llama-2-7B-chat Q4_K_M: a 4.08 GB file; 32 layers, K and V of 4096 f16 values per token each.
    weights, kv_per_token, overhead = 4.08e9, 32 * 2 * 4096 * 2, 0.7 * GIB
    e, resources = env("cpu"), container("cpu")["resources"]
    need = (
        weights
        + int(e["LLAMA_SERVER_PARALLEL"]) * int(e["LLAMA_SERVER_N_CTX"]) * kv_per_token
        + int(e["LLAMA_SERVER_CACHE_RAM"]) * (1 << 20)
        + overhead
    )
    assert need <= quantity(resources["requests"]["memory"]) == quantity(resources["limits"]["memory"])
    assert int(resources["requests"]["cpu"]) == int(e["LLAMA_SERVER_N_THREADS"])


def test_the_gpu_variant_differs_only_where_a_gpu_needs_it():
    cpu, gpu = deployment("cpu"), deployment("gpu")
    assert container("gpu")["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env("gpu")["LLAMA_SERVER_N_GPU_LAYERS"] == "-1"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu["spec"]["template"]["spec"][
        "tolerations"
    ]

    def without_gpu_parts(doc: dict) -> dict:
        doc = copy.deepcopy(doc)
        pod = doc["spec"]["template"]["spec"]
        pod.pop("tolerations", None)
        c = pod["containers"][0]
        for key in ("image", "resources"):
            c.pop(key)
        c["env"] = [
            e
            for e in c["env"]
            if e["name"]
            not in (
                "LLAMA_SERVER_N_GPU_LAYERS",
                "LLAMA_SERVER_PARALLEL",
                "LLAMA_SERVER_N_THREADS",
                "LLAMA_SERVER_CACHE_RAM",
                "LLAMA_SERVER_RAM_BUDGET_MB",  # the weights and KV cache live on the GPU, not in host RAM
            )
        ]
        return doc

    assert without_gpu_parts(gpu) == without_gpu_parts(cpu)


def test_service_pdb_and_autoscaler_point_at_the_deployment():
    docs = {doc["kind"]: doc for _, doc in manifests() if doc["kind"] != "Deployment"}
    dep = deployment("cpu")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    scaled = docs["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    # One pod may be down for a drain (the budget) while another still serves.
    assert scaled["minReplicaCount"] >= docs["PodDisruptionBudget"]["spec"]["maxUnavailable"] + 1
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus" and "llama_server_queue_depth" in trigger["metadata"]["query"]
    # The threshold is requests per pod: one per slot.
    assert trigger["metadata"]["threshold"] == env("cpu")["LLAMA_SERVER_PARALLEL"]
    claim = dep["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert docs["PersistentVolumeClaim"]["metadata"]["name"] == claim
