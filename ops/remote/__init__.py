"""Everything that reaches a server over SSH after its first boot.

commands builds quoted command strings, facts reads a server's state,
change writes files with backup, validation and rollback, lock and audit
record who changes a server, connect opens pinned SSH connections, and hosts
runs one function on several servers at once.
"""
