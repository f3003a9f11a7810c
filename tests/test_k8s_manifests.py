"""The Kubernetes manifests (deploy/k8s), checked offline: no cluster is needed and nothing is applied.

Each kustomization is rendered with `kubectl kustomize`, every object is validated against the Kubernetes
API's JSON schemas in strict mode (kubernetes-validate ships them: no network), and the rendered objects are
checked for what the deployment promises: locked-down pods, probes and resources, read-only model
repositories on the servers, one Recreate trainer per framework, an HPA per server Deployment, headless
server Services, ReadWriteMany model claims, a NetworkPolicy that lets only the gateway reach the framework
pods, and gateway URLs that name Services of the same render on the right ports; and the framework images
are built from services/Dockerfile for the ports the manifests use.

kubectl is required: without it the test fails (it does not skip).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "deploy" / "k8s"
INGRESS_COMPONENT = BASE / "ingress"
EXAMPLE_OVERLAY = BASE / "examples" / "overlay-kustomization.yaml"

KUBERNETES_VERSION = "1.37.0"  # the newest schemas that the pinned kubernetes-validate carries
NAMESPACE = "mnistcmp"
FRAMEWORKS = {"keras": 8001, "torch": 8002, "tf": 8003, "jax": 8004}
GATEWAY_PORT = 8000
POD_USER = 10001  # the images' user `app`


# --- rendering ---------------------------------------------------------------------------------------------


def _kubectl() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render deploy/k8s (`kubectl kustomize`) and is not on PATH; "
                    "install it (Debian: apt-get install kubernetes-client)", pytrace=False)
    return kubectl


def _render(folder: Path) -> list[dict]:
    result = subprocess.run([_kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {folder} failed:\n{result.stderr}", pytrace=False)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return _render(BASE)


@pytest.fixture(scope="module")
def overlay(tmp_path_factory) -> list[dict]:
    """The README's example overlay, with its base and component paths pointed at this repository."""
    kustomization = yaml.safe_load(EXAMPLE_OVERLAY.read_text())
    assert len(kustomization["resources"]) == 1 and len(kustomization["components"]) == 1
    folder = tmp_path_factory.mktemp("overlay")
    # kustomize takes relative paths only for bases and components
    kustomization["resources"] = [os.path.relpath(BASE, folder)]
    kustomization["components"] = [os.path.relpath(INGRESS_COMPONENT, folder)]
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return _render(folder)


# --- helpers over rendered objects ------------------------------------------------------------------------


def _objects(rendered: list[dict], kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for obj in rendered if obj["kind"] == kind}


def _one(rendered: list[dict], kind: str, name: str) -> dict:
    found = _objects(rendered, kind)
    assert name in found, f"no {kind} {name!r} in the render (have {sorted(found)})"
    return found[name]


def _matches(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels / matchExpressions) selects these labels."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _pod_labels(deployment: dict) -> dict:
    return deployment["spec"]["template"]["metadata"]["labels"]


def _pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def _app(deployment: dict) -> dict:
    (container,) = _pod_spec(deployment)["containers"]
    return container


def _env(container: dict) -> dict[str, object]:
    """name -> value, or the valueFrom source."""
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def _mounts(container: dict) -> dict[str, dict]:
    return {mount["mountPath"]: mount for mount in container.get("volumeMounts", [])}


def _volume(deployment: dict, name: str) -> dict:
    volumes = {volume["name"]: volume for volume in _pod_spec(deployment).get("volumes", [])}
    assert name in volumes, f"{deployment['metadata']['name']}: no volume {name!r}"
    return volumes[name]


def _container_port(container: dict, port: int | str) -> int:
    """A probe's or Service's port (a number or a port name) as the container's port number."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"container {container['name']} has no port named {port!r}"
    return named[port]


def _pods_selected(rendered: list[dict], selector: dict) -> list[str]:
    return [name for name, deployment in _objects(rendered, "Deployment").items()
            if _matches(selector, _pod_labels(deployment))]


def _url_map(value: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in value.split(",")]
    return {name: url for name, url in pairs}


# --- schema validation ------------------------------------------------------------------------------------


def test_kubernetes_validate_carries_the_version():
    assert KUBERNETES_VERSION in all_versions(), f"kubernetes-validate has schemas for {all_versions()}"


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_every_object_validates_strictly(which, request):
    rendered = request.getfixturevalue(which)
    errors = []
    for obj in rendered:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:  # an unknown kind or apiVersion
            errors.append(f"{where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_strict_validation_rejects_a_misspelled_field(base):
    """The validator really looks: an unknown field (a typo) in a pod template is an error."""
    deployment = yaml.safe_load(yaml.safe_dump(_one(base, "Deployment", "keras")))
    container = _app(deployment)
    container["readinessprobe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --- what the base holds ----------------------------------------------------------------------------------


def test_the_base_holds_the_whole_stack_in_one_namespace(base):
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in base}
    expected = {("Namespace", NAMESPACE), ("Deployment", "gateway"), ("Service", "gateway"),
                ("PersistentVolumeClaim", "mnist"), ("PersistentVolumeClaim", "gateway-data")}
    for fw in FRAMEWORKS:
        expected |= {("Deployment", fw), ("Deployment", f"{fw}-trainer"), ("Service", fw),
                     ("Service", f"{fw}-trainer"), ("HorizontalPodAutoscaler", fw),
                     ("PersistentVolumeClaim", f"models-{fw}")}
    assert expected <= kinds, f"missing: {sorted(expected - kinds)}"
    assert not _objects(base, "Ingress"), "the Ingress is optional: it must not be in the base"
    for obj in base:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == NAMESPACE


def test_every_deployment_selects_its_own_pods(base):
    for name, deployment in _objects(base, "Deployment").items():
        assert _matches(deployment["spec"]["selector"], _pod_labels(deployment)), name
        assert _pods_selected(base, deployment["spec"]["selector"]) == [name], f"{name}'s selector is not unique"


def test_every_pod_is_locked_down(base):
    for name, deployment in _objects(base, "Deployment").items():
        pod = _pod_spec(deployment)
        assert pod.get("automountServiceAccountToken") is False, name
        security = pod.get("securityContext", {})
        assert security.get("runAsNonRoot") is True, name
        assert (security.get("runAsUser"), security.get("runAsGroup"), security.get("fsGroup")) == (POD_USER,) * 3
        assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, name
        assert "emptyDir" in _volume(deployment, "tmp"), name
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{name}/{container['name']}"
            context = container.get("securityContext", {})
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container.get("resources", {}).get(part, {})), f"{where}: {part}"
            assert container.get("imagePullPolicy") == "IfNotPresent", where
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            assert _mounts(container).get("/tmp", {}).get("name") == "tmp", f"{where}: no writable /tmp"
            for probe in ("livenessProbe", "readinessProbe"):
                assert probe in container, f"{where}: no {probe}"
                http = container[probe]["httpGet"]
                assert _container_port(container, http["port"]) == container["ports"][0]["containerPort"], where


# --- the frameworks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_servers_serve_the_promoted_version_read_only(base, fw):
    port = FRAMEWORKS[fw]
    deployment = _one(base, "Deployment", fw)
    assert deployment["spec"]["replicas"] == 2
    assert _pod_labels(deployment)["app.kubernetes.io/component"] == "server"
    container = _app(deployment)
    assert container["image"] == f"mnistcmp-{fw}:latest"
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    env = _env(container)
    assert {key: env.get(key) for key in ("ROLE", "PORT", "SERVER_WORKERS", "MODEL_POLL_S", "TRAINER_URL",
                                          "MODEL_REPOSITORY", "MNIST_DIR")} == {
        "ROLE": "server", "PORT": str(port), "SERVER_WORKERS": "2", "MODEL_POLL_S": "2",
        "TRAINER_URL": f"http://{fw}-trainer:{port}", "MODEL_REPOSITORY": "/models", "MNIST_DIR": "/data/mnist"}
    # CPU_LIMIT follows the container's CPU limit, which is 2
    assert env["CPU_LIMIT"] == {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "3Gi"}}
    # Ready only once every model has a loaded version; alive (and started) as soon as HTTP answers
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    mounts = _mounts(container)
    assert mounts["/models"].get("readOnly") is True and mounts["/data/mnist"].get("readOnly") is True
    assert _volume(deployment, mounts["/models"]["name"])["persistentVolumeClaim"]["claimName"] == f"models-{fw}"
    assert _volume(deployment, mounts["/data/mnist"]["name"])["persistentVolumeClaim"]["claimName"] == "mnist"
    # the server waits for the trainer's MNIST download, on the same read-only claim
    (init,) = _pod_spec(deployment)["initContainers"]
    assert init["image"] == container["image"]
    assert _mounts(init)["/data/mnist"] == mounts["/data/mnist"]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_one_trainer_writes_the_repository(base, fw):
    port = FRAMEWORKS[fw]
    deployment = _one(base, "Deployment", f"{fw}-trainer")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert _pod_labels(deployment)["app.kubernetes.io/component"] == "trainer"
    container = _app(deployment)
    assert container["image"] == f"mnistcmp-{fw}:latest"
    assert container["ports"] == [{"name": "http", "containerPort": port}]
    env = _env(container)
    assert (env["ROLE"], env["PORT"], env["MODEL_REPOSITORY"], env["MNIST_DIR"]) == (
        "trainer", str(port), "/models", "/data/mnist")
    mounts = _mounts(container)
    assert not mounts["/models"].get("readOnly") and not mounts["/data/mnist"].get("readOnly")
    models = _volume(deployment, mounts["/models"]["name"])["persistentVolumeClaim"]
    assert models == {"claimName": f"models-{fw}"}
    assert _volume(deployment, mounts["/data/mnist"]["name"])["persistentVolumeClaim"] == {"claimName": "mnist"}


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_the_images_come_from_the_one_service_dockerfile_with_the_same_port(fw):
    """compose.yaml (which tags the images the base names) and the README's `docker build` lines build
    mnistcmp-<fw> from services/Dockerfile with SERVICE=<fw> and the port the manifests use; its user is
    the pods' user."""
    port = FRAMEWORKS[fw]
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in (fw, f"{fw}-trainer"):
        assert compose[name]["image"] == f"mnistcmp-{fw}:latest", name
        build = compose[name]["build"]
        assert (build["context"], build["dockerfile"]) == (".", "services/Dockerfile"), name
        assert {key: build["args"][key] for key in ("SERVICE", "PORT")} == {"SERVICE": fw, "PORT": str(port)}, name
    readme = (BASE / "README.md").read_text()
    assert (f"docker build -f services/Dockerfile --build-arg SERVICE={fw} --build-arg PORT={port} "
            f"-t mnistcmp-{fw}:latest .") in readme
    dockerfile = (ROOT / "services" / "Dockerfile").read_text()
    assert f"useradd --uid {POD_USER} " in dockerfile


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_each_server_deployment_autoscales_on_cpu(base, fw):
    hpas = [hpa for hpa in _objects(base, "HorizontalPodAutoscaler").values()
            if hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": fw}]
    assert len(hpas) == 1, f"{len(hpas)} HPAs scale Deployment {fw}"
    (hpa,) = hpas
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_services_headless_for_the_servers_clusterip_for_the_trainer(base, fw):
    port = FRAMEWORKS[fw]
    server = _one(base, "Service", fw)
    assert server["spec"]["clusterIP"] == "None"
    assert server["spec"]["publishNotReadyAddresses"] is True
    assert _pods_selected(base, {"matchLabels": server["spec"]["selector"]}) == [fw]
    assert server["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]
    trainer = _one(base, "Service", f"{fw}-trainer")
    assert trainer["spec"].get("type", "ClusterIP") == "ClusterIP" and trainer["spec"].get("clusterIP") != "None"
    assert _pods_selected(base, {"matchLabels": trainer["spec"]["selector"]}) == [f"{fw}-trainer"]
    assert trainer["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http"}]


def test_claims_shared_where_several_pods_mount_them(base, overlay):
    claims = _objects(base, "PersistentVolumeClaim")
    for fw in FRAMEWORKS:
        assert claims[f"models-{fw}"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claims["mnist"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claims["gateway-data"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    # the base leaves the class to the cluster; the example overlay sets it
    assert not [name for name, claim in claims.items() if "storageClassName" in claim["spec"]]
    assert {name: claim["spec"].get("storageClassName")
            for name, claim in _objects(overlay, "PersistentVolumeClaim").items()} == {
        **{f"models-{fw}": "nfs-csi" for fw in FRAMEWORKS}, "mnist": "nfs-csi", "gateway-data": "standard"}
    # every claim a pod mounts is in the render
    for name, deployment in _objects(base, "Deployment").items():
        for volume in _pod_spec(deployment).get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name


# --- the network policy -----------------------------------------------------------------------------------


def _ingress_rules_for(rendered: list[dict], labels: dict) -> list[dict]:
    """Every ingress rule of every NetworkPolicy that selects pods with these labels."""
    rules = []
    for policy in _objects(rendered, "NetworkPolicy").values():
        if "Ingress" in policy["spec"].get("policyTypes", ["Ingress"]) and _matches(
                policy["spec"]["podSelector"], labels):
            rules += policy["spec"].get("ingress", [])
    return rules


def test_ingress_denied_by_default(base):
    default_deny = [policy for policy in _objects(base, "NetworkPolicy").values()
                    if policy["spec"]["podSelector"] == {} and policy["spec"].get("policyTypes") == ["Ingress"]
                    and not policy["spec"].get("ingress")]
    assert default_deny, "no default-deny ingress NetworkPolicy"


@pytest.mark.parametrize("name", [*FRAMEWORKS, *(f"{fw}-trainer" for fw in FRAMEWORKS)])
def test_framework_pods_reachable_only_from_the_gateway(base, name):
    deployment = _one(base, "Deployment", name)
    port = _app(deployment)["ports"][0]["containerPort"]
    gateway_labels = _pod_labels(_one(base, "Deployment", "gateway"))
    framework_pods = [_pod_labels(d) for n, d in _objects(base, "Deployment").items() if n != "gateway"]
    rules = _ingress_rules_for(base, _pod_labels(deployment))
    assert rules, f"nothing may reach {name}: the gateway could not either"
    for rule in rules:
        assert rule.get("from"), f"{name}: a rule allows every source"
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, f"{name}: a rule allows {sorted(peer)}"
            assert _matches(peer["podSelector"], gateway_labels), f"{name}: a rule allows pods besides the gateway"
            assert not any(_matches(peer["podSelector"], labels) for labels in framework_pods), name
        assert rule.get("ports") == [{"protocol": "TCP", "port": port}], name


def test_gateway_reachable_from_anywhere_on_its_port_only(base):
    rules = _ingress_rules_for(base, _pod_labels(_one(base, "Deployment", "gateway")))
    assert rules
    assert any(not rule.get("from") for rule in rules), "the gateway must be reachable from anywhere"
    for rule in rules:
        assert rule.get("ports") == [{"protocol": "TCP", "port": GATEWAY_PORT}]


# --- the gateway ------------------------------------------------------------------------------------------


def test_gateway_urls_name_services_of_the_render(base):
    services = _objects(base, "Service")
    gateway = _app(_one(base, "Deployment", "gateway"))
    env = _env(gateway)
    for variable, component, headless in (("SERVICE_URLS", "server", True), ("TRAINER_URLS", "trainer", False)):
        urls = _url_map(env[variable])
        assert set(urls) == set(FRAMEWORKS), variable
        for fw, url in urls.items():
            where = f"{variable} {fw}={url}"
            parts = urlsplit(url)
            assert parts.scheme == "http" and parts.port == FRAMEWORKS[fw], where
            assert parts.hostname in services, f"{where}: no Service {parts.hostname!r}"
            service = services[parts.hostname]["spec"]
            # headless names resolve to the pods themselves: the URL's port must be the container's port
            assert (service.get("clusterIP") == "None") is headless, where
            assert service.get("publishNotReadyAddresses", False) is headless, where
            (pod_name,) = _pods_selected(base, {"matchLabels": service["selector"]})
            pod = _one(base, "Deployment", pod_name)
            assert _pod_labels(pod)["app.kubernetes.io/component"] == component, where
            assert _pod_labels(pod)["mnistcmp/framework"] == fw, where
            (service_port,) = [p for p in service["ports"] if p["port"] == parts.port]
            assert _container_port(_app(pod), service_port["targetPort"]) == parts.port, where


def test_gateway_keeps_its_history_on_one_volume(base):
    deployment = _one(base, "Deployment", "gateway")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = _app(deployment)
    env = _env(container)
    assert env["MPLCONFIGDIR"] == "/tmp"
    data = _mounts(container)[env["GATEWAY_DATA_DIR"]]
    assert not data.get("readOnly")
    assert _volume(deployment, data["name"])["persistentVolumeClaim"]["claimName"] == "gateway-data"
    service = _one(base, "Service", "gateway")["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    assert service["ports"] == [{"name": "http", "port": GATEWAY_PORT, "targetPort": "http"}]
    assert _pods_selected(base, {"matchLabels": service["selector"]}) == ["gateway"]


# --- the example overlay ----------------------------------------------------------------------------------


def test_example_overlay_adds_the_ingress_and_registry_images(base, overlay):
    ingress = _one(overlay, "Ingress", "gateway")
    assert ingress["metadata"]["namespace"] == NAMESPACE
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "gateway"
    assert backend["port"]["name"] in {p["name"] for p in _one(overlay, "Service", "gateway")["spec"]["ports"]}
    images = {c["image"] for d in _objects(overlay, "Deployment").values()
              for c in _pod_spec(d)["containers"] + _pod_spec(d).get("initContainers", [])}
    assert images == {f"registry.example.com/mnistcmp/{name}:1.0.0" for name in [*FRAMEWORKS, "gateway"]}
    # otherwise the overlay changes nothing of the base
    assert {(o["kind"], o["metadata"]["name"]) for o in overlay} - {(o["kind"], o["metadata"]["name"])
                                                                      for o in base} == {("Ingress", "gateway")}


def test_the_gateway_accepts_only_known_host_names(base, overlay):
    def allowed(rendered):
        gateway = _pod_spec(_one(rendered, "Deployment", "gateway"))["containers"][0]
        return _env(gateway)["ALLOWED_HOSTS"].split(",")

    assert allowed(base) == ["localhost", "127.0.0.1"]  # kubectl port-forward
    ingress_host = _one(overlay, "Ingress", "gateway")["spec"]["rules"][0]["host"]
    assert ingress_host in allowed(overlay)


def test_tokens_come_from_the_secret(base):
    for name, deployment in _objects(base, "Deployment").items():
        spec = _pod_spec(deployment)
        app = next(c for c in spec["containers"] if c["name"] == "app")
        secrets = {v["name"]: v["secret"] for v in spec["volumes"] if "secret" in v}
        assert secrets["tokens"]["secretName"] == "mnistcmp-tokens", name
        mount = next(m for m in app["volumeMounts"] if m["name"] == "tokens")
        assert mount["readOnly"] is True
        wanted = ["API_TOKEN_FILE", "SERVICE_TOKEN_FILE"] if name == "gateway" else ["API_TOKEN_FILE"]
        for variable in wanted:
            path = _env(app)[variable]
            assert path.startswith(mount["mountPath"] + "/"), (name, variable, path)
            key = path.rsplit("/", 1)[1]
            items = secrets["tokens"].get("items")
            assert items is None or key in {i["path"] for i in items}, (name, key)
    assert _env(next(c for c in _pod_spec(_one(base, "Deployment", "gateway"))["containers"]))["API_TOKEN_FILE"] \
        .endswith("/api-token")


def test_the_gateway_limits_each_clients_predictions(base):
    gateway = _pod_spec(_one(base, "Deployment", "gateway"))["containers"][0]
    assert _env(gateway)["RATE_LIMIT"]  # set here (off by default in compose and make run, for benchmarks)
    assert "GATEWAY_TRUSTED_PROXY" in _env(gateway)


def test_the_gateways_liveness_does_not_depend_on_the_services(base):
    gateway = _pod_spec(_one(base, "Deployment", "gateway"))["containers"][0]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health"
