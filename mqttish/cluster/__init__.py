"""Several mqttish processes acting as one broker, through Redis (docs/scaling.md).

`node.ClusterNode` makes a server one node of a cluster: it is the core's
`Remote` (core/remote.py), keeps the node's lease, the route table and the
inbox, claims client ids and adopts dead nodes. `store.RedisStore` is the
journal's store in a cluster, and the one Lua script (`commit.lua`) through
which a node commits everything. `supervisor` runs `--workers N`. Nothing in
`protocol/` or `core/` imports this package.
"""
