"""``dlpipe k8s``: a one-node Kubernetes built from source on this machine (issue 19), started
and stopped like the local stack.

    scripts/install_k8s.sh          # etcd + Kubernetes v1.34.4 from the Go module proxy, once
    dlpipe k8s up [--no-node]       # etcd, API server, controller manager, scheduler, CoreDNS;
                                    # containerd + kubelet + kube-proxy
    dlpipe k8s load [IMAGE]         # an image of the local containers storage into the node
    dlpipe k8s status | kubeconfig | down

The pieces and why they are set up as they are: ``dlpipe.localstack.k8s``, ``k8s_node`` and
``k8s_network``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dlpipe.core.args import add_config_args, config_from_args

ACTIONS = {
    "up": "start what is not running; prints the admin kubeconfig's path",
    "down": "stop the node's pods, the node and the control plane (TERM, then KILL)",
    "status": "state of each component; exit 1 unless the control plane (and a started node) is healthy",
    "kubeconfig": "print the admin kubeconfig's path (export KUBECONFIG=...)",
    "load": "copy an image of the local containers storage (make image) into the node's containerd",
}
NODE = ("containerd", "kubelet", "kube-proxy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlpipe k8s", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    parsers = {name: sub.add_parser(name, help=text, description=text) for name, text in ACTIONS.items()}
    parsers["up"].add_argument("--no-node", dest="node", action="store_false",
                               help="the control plane only (real admission, nothing scheduled)")
    parsers["load"].add_argument("image", nargs="?", default="localhost/dlpipe:dev",
                                 help="image name (default: localhost/dlpipe:dev)")
    for p in parsers.values():
        add_config_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from dlpipe.localstack.k8s import ControlPlane

    args = build_parser().parse_args(argv)
    plane = ControlPlane.of(config_from_args(args))
    if args.action == "up":
        started = plane.up(node=args.node)
        print("started: " + (", ".join(started) if started else "nothing (all running)"))
        print(f"kubeconfig: {plane.kubeconfig()}  (export KUBECONFIG={plane.kubeconfig()})")
    elif args.action == "down":
        stopped = plane.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    elif args.action == "kubeconfig":
        print(plane.kubeconfig())
    elif args.action == "load":
        plane.load(args.image)
        print(f"{args.image}: in the node's containerd")
    else:
        status = plane.status()
        for name, state in status.items():
            print(f"{name:24s} {state}")
        print(f"{'api server':24s} {plane.server}")
        # A control plane without a node (up --no-node) is healthy.
        return 0 if all(state == "healthy" or (name in NODE and state == "stopped")
                        for name, state in status.items()) else 1
    return 0
