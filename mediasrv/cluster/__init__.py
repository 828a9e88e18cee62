"""Several mediasrv nodes sharing rooms through Redis: the node registry, room placement leases, the
command bus between nodes, visit state that outlives a node, and drain (docs/cluster.md)."""

from mediasrv.cluster.node import MOVED, Cluster, NodeUnreachable, NoServingNode

__all__ = ["MOVED", "Cluster", "NoServingNode", "NodeUnreachable"]
