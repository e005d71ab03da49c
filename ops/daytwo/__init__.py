"""Day-two operations on running servers: credentials, users, Caddy, logs, updates.

Each module contains the per-server work of one task family; ops.daytwo.tasks
turns them into Invoke tasks.
"""
