"""Local stand-ins for external services, used by the tests.

hcloud_api: a stateful fake of the Hetzner Cloud API that checks every request
and reply against Hetzner's published OpenAPI document (hcloud-openapi.json,
kept beside it with its licence file).
"""
