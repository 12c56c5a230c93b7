"""The one node of the local Kubernetes (issue 19, stage 2): containerd (Debian's) with runc and
the CNI bridge plugin, and a kubelet built from source, all under ``<state_dir>/k8s/node``.

The node's address is a second address on ``lo`` (10.98.0.1 by default): kubelet refuses a
127.x node IP, and nothing outside this machine routes to an address on ``lo``. Pods get
addresses from a bridge (``dlpipe-br0``, ``stack.k8s.pod_cidr``) and masquerade out. Images are
imported into containerd's ``k8s.io`` namespace from OCI archives: the pause image
``scripts/install_k8s.sh`` builds, and any image of the local containers storage
(``dlpipe k8s load localhost/dlpipe:dev``, which ``make image`` builds).

containerd runs with ``restrict_oom_score_adj`` (this sandbox has no CAP_SYS_RESOURCE) and the
cgroupfs driver (cgroup v1 here, no systemd); kubelet allows cgroup v1 (``failCgroupV1: false``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from dlpipe.core.errors import MissingToolError, ServiceError
from dlpipe.core.process import Service

NODE_NAME = "dlpipe-node"
BRIDGE = "dlpipe-br0"
CNI_BIN = Path("/usr/lib/cni")
DEBIAN_PACKAGES = "containerd runc containernetworking-plugins iptables conntrack iproute2"


def require_node_tools() -> None:
    lacking = [t for t in ("containerd", "ctr", "runc", "ip", "iptables") if shutil.which(t) is None]
    if not (CNI_BIN / "bridge").is_file():
        lacking.append(f"CNI plugins in {CNI_BIN}")
    if lacking:
        raise MissingToolError(f"the Kubernetes node needs {', '.join(lacking)}",
                               fix=f"apt-get install -y {DEBIAN_PACKAGES}  "
                                   "(scripts/install_k8s.sh does it as root)")


def ensure_address(ip: str) -> None:
    """The node's address, a second address on ``lo`` (idempotent; needs root). Not a dummy
    interface: this kernel has no dummy driver ("Unknown device type")."""
    shown = subprocess.run(["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    if f" {ip}/" in shown.stdout:
        return
    added = subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"], capture_output=True, text=True)
    if added.returncode != 0:
        raise ServiceError(f"cannot give lo the node's address {ip}: {added.stderr.strip()}",
                           fix="run as root (kubelet needs a node address that is not 127.x), or "
                               "set stack.k8s.node_ip to an address this machine has")


def containerd_config(home: Path, pause_image: str, image_store: Path) -> str:
    """containerd's config: its content and snapshots in ``image_store``/root (may outlive and be
    shared by nodes), its sockets and task state under ``home``."""
    return f"""version = 2
root = "{image_store / 'root'}"
state = "{home / 'containerd' / 'state'}"
[grpc]
  address = "{socket(home)}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{home / 'cni'}"
"""


def cni_config(pod_cidr: str) -> str:
    return json.dumps({"cniVersion": "1.0.0", "name": "dlpipe", "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "loopback"}]}, indent=2)


def kubelet_config(home: Path, *, node_ip: str, port: int, healthz_port: int, client_ca: Path,
                   pod_cidr: str, cluster_dns: str) -> str:
    """KubeletConfiguration (JSON is YAML): webhook authn/authz against the API server, client
    certificates from ``client_ca`` (the API server's kubelet client), nothing anonymous."""
    pki = home / "pki"
    return json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node_ip, "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet.crt"), "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(client_ca)}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket(home)}",
        "podCIDR": pod_cidr, "clusterDomain": "cluster.local", "clusterDNS": [cluster_dns],
        "resolvConf": "/etc/resolv.conf",
        "podLogsDir": str(home / "pod-logs"), "serializeImagePulls": False,
        "registerNode": True, "protectKernelDefaults": False,
        # Absolute, not a percentage: 2% of this machine's shared 252 GB disk (5 GB) put the node
        # under DiskPressure, and its pods unscheduled, with gigabytes still free.
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "1Gi", "imagefs.available": "1Gi"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
    }, indent=2)


def socket(home: Path) -> Path:
    return home / "containerd" / "containerd.sock"


def ctr_argv(home: Path, *args: str) -> list[str]:
    """containerd's own client on this node's socket, in kubelet's ``k8s.io`` namespace.
    Without ``ctr`` installed: the node's missing tools and how to install them, not a
    FileNotFoundError from deep in subprocess."""
    if shutil.which("ctr") is None:
        require_node_tools()
    return ["ctr", "--address", str(socket(home)), "--connect-timeout", "5s", "-n", "k8s.io", *args]


def ctr(home: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ctr_argv(home, *args), capture_output=True, text=True, timeout=timeout)


def containerd_service(home: Path) -> Service:
    def healthy() -> bool:
        return socket(home).exists() and ctr(home, "version", timeout=5).returncode == 0

    return Service(name="containerd", argv=["containerd", "--config", str(home / "containerd.toml")],
                   log=home / "containerd.log", pid_file=home / "containerd.pid", ports=[], healthy=healthy)


def kubelet_service(home: Path, kubelet: Path, kubeconfig: Path, *, node_ip: str, healthz_port: int,
                    prepare: Callable[[], None]) -> Service:
    def healthy() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{healthz_port}/healthz", timeout=2) as r:
            return r.status == 200

    return Service(
        name="kubelet", argv=[
            str(kubelet), f"--config={home / 'kubelet.json'}", f"--kubeconfig={kubeconfig}",
            f"--hostname-override={NODE_NAME}", f"--node-ip={node_ip}", f"--root-dir={home / 'kubelet'}",
            f"--cert-dir={home / 'pki'}"],
        log=home / "kubelet.log", pid_file=home / "kubelet.pid", ports=[healthz_port], healthy=healthy,
        prepare=prepare)


def import_archive(home: Path, archive: Path) -> None:
    """Import an OCI archive into containerd's ``k8s.io`` namespace (what kubelet uses)."""
    done = ctr(home, "images", "import", str(archive))
    if done.returncode != 0:
        raise ServiceError(f"containerd could not import {archive}: {done.stderr.strip()[-500:]}",
                           fix=f"see {home / 'containerd.log'}")


def import_stream(home: Path, producer: list[str], what: str, timeout: float = 1800) -> None:
    """Import the image archive that ``producer`` writes to its stdout, through a pipe: no copy
    of several GB lands on disk on its way into containerd. When either side fails, the error
    names containerd's side first: a full disk stops the import, and the producer then only
    sees a broken pipe."""
    importer = ctr_argv(home, "images", "import", "-")  # before the producer starts
    with tempfile.TemporaryFile() as produce_err:
        with subprocess.Popen(producer, stdout=subprocess.PIPE, stderr=produce_err) as produce:
            try:
                done = subprocess.run(importer, stdin=produce.stdout,
                                      capture_output=True, text=True, timeout=timeout)
            finally:
                produce.stdout.close()
                try:
                    produce.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    produce.kill()
        produce_err.seek(0)
        exported = produce_err.read().decode(errors="replace").strip()
    if done.returncode == 0 and produce.returncode == 0:
        return
    parts = [f"containerd: {done.stderr.strip()[-400:]}" if done.returncode != 0 else "",
             f"{producer[0]} (exit {produce.returncode}): {exported[-400:]}" if produce.returncode else ""]
    raise ServiceError(f"could not load {what} into the node: " + "; ".join(p for p in parts if p),
                       fix=f"see {home / 'containerd.log'}; check the free disk (`df -h`: an image "
                           f"takes about twice its size) and `{producer[0]} images`")


def image_ids(home: Path) -> set[str]:
    return set(ctr(home, "images", "ls", "-q", timeout=30).stdout.split())


def prune_replaced_images(home: Path) -> list[str]:
    """Remove what a re-load left behind: an import names the image twice (its tag and
    ``sha256:<config>``), and a new build under the same tag leaves the old ``sha256:`` name
    holding gigabytes. Digest-only names that no tag shares go (and with them, by containerd's
    GC, layers no image uses); returns them."""
    listed = ctr(home, "images", "ls", timeout=30)
    rows = [line.split() for line in listed.stdout.splitlines()[1:] if line.strip()]
    tagged = {row[2] for row in rows if len(row) > 2 and not row[0].startswith("sha256:")}
    stale = [row[0] for row in rows if len(row) > 2 and row[0].startswith("sha256:") and row[2] not in tagged]
    if stale:
        ctr(home, "images", "rm", "--sync", *stale)
    return stale


def stop_pods(home: Path) -> None:
    """Kill what the node runs: containerd's shims (and so their containers) outlive both
    kubelet and containerd, and kubelet's volume mounts outlive them all."""
    sock = str(socket(home))
    tasks = ctr(home, "tasks", "ls", "-q", timeout=30)
    for task in tasks.stdout.split() if tasks.returncode == 0 else []:
        ctr(home, "tasks", "kill", "-a", "-s", "SIGKILL", task, timeout=30)
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"containerd-shim" in (cmd := (proc / "cmdline").read_bytes()) \
                    and sock.encode() in cmd:
                subprocess.run(["kill", "-9", proc.name], capture_output=True)
        except OSError:
            continue
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(str(home))), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)
