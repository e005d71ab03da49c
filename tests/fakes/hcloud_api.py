"""A local, stateful fake of the Hetzner Cloud API for the tests.

It serves the part of the API that provisioning uses through hcloud-python:
SSH keys, firewalls (with set_rules and apply/remove actions), servers,
actions, server types, locations and images. It listens on 127.0.0.1 only.

Every request and every reply is checked against Hetzner's OpenAPI document
(hcloud-openapi.json beside this file) with openapi-core. A mismatch is
recorded in `violations`; `check()` raises if any was recorded, so a fixture
that calls it at teardown fails the test.

Behaviour that the OpenAPI document does not contain follows the API's
overview documentation (docs.hetzner.cloud, "Errors", "Pagination", "Rate
Limiting", "Labels", "Label Selector"): error codes with their HTTP status,
`{"error": {"code", "message", "details"}}` bodies, `page`/`per_page` with a
`Link` header and `meta.pagination`, and the RateLimit-* headers.

Tests steer it with fail_next(), fail_after_create(), delay_next(),
fail_action(), stall_action(), set_out_of_stock(), set_rate_limit() and the
on_server_create()/on_server_delete() hooks.

Not modelled: resource locks (423 locked), PUT updates, volumes, networks,
primary IPs, and /datacenters, which hcloud-python 2.27 marks for removal
after 2026-10-01. Requests are handled one at a time.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import functools
import hashlib
import ipaddress
import itertools
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from . import hcloud_catalog as catalog

log = logging.getLogger(__name__)

SPEC_PATH = Path(__file__).with_name("hcloud-openapi.json")
# openapi-core matches request URLs against the document's `servers` entry,
# so requests are validated as if they had been sent to the real API.
SPEC_SERVER = "https://api.hetzner.cloud"
API_PREFIX = "/v1"

# POST /servers: "user_data ... This field is limited to 32KiB." (OpenAPI
# document, create_server_request). Counted in bytes of the UTF-8 encoding.
USER_DATA_LIMIT = 32 * 1024

# Pagination: "The default value is 25, the maximum value is 50".
DEFAULT_PER_PAGE = 25
MAX_PER_PAGE = 50

# Rate limiting: "The default limit is 3600 requests per hour and per Project.
# The number of remaining requests increases gradually", one per second.
DEFAULT_RATE_LIMIT = 3600

# HTTP status of each error code, from the "Error Codes" table of the API
# overview, plus the operation-specific codes this fake returns.
ERROR_STATUS = {
    "json_error": 400,
    "unauthorized": 401,
    "token_readonly": 401,
    "forbidden": 403,
    "maintenance": 403,
    "resource_limit_exceeded": 403,
    "not_found": 404,
    "firewall_resource_not_found": 404,
    "method_not_allowed": 405,
    "uniqueness_error": 409,
    "conflict": 409,
    "deprecated_api_endpoint": 410,
    "resource_unavailable": 412,
    "invalid_input": 422,
    "service_error": 422,
    "unsupported_error": 422,
    "resource_in_use": 422,
    "firewall_already_applied": 422,
    "firewall_already_removed": 422,
    "server_already_added": 422,
    "locked": 423,
    "protected": 423,
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "unavailable": 503,
    "timeout": 504,
}

_LABEL_NAME = r"[a-zA-Z0-9](?:[a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?"
_LABEL_KEY = re.compile(
    rf"^(?:(?P<prefix>[a-z0-9](?:[a-z0-9.-]{{0,251}}[a-z0-9])?)/)?{_LABEL_NAME}$"
)
_LABEL_VALUE = re.compile(rf"^(?:{_LABEL_NAME})?$")
# RFC 1123 host name: labels of letters, digits and dashes, joined by dots.
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")  # fmt: skip


# ---------------------------------------------------------------------------
# The OpenAPI document


@dataclass(frozen=True)
class LoadedSpec:
    """The parsed OpenAPI document and how long parsing it took."""

    openapi: OpenAPI
    path: Path
    load_seconds: float


def _normalize_response_ranges(document: dict[str, Any]) -> None:
    """Rename the document's "4xx"/"5xx" response keys to "4XX"/"5XX".

    OpenAPI 3.0.3 allows only upper-case range keys ("1XX" to "5XX"). Hetzner's
    document writes them in lower case, which openapi-spec-validator rejects
    and openapi-core would not match to a 4xx or 5xx reply.
    """
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for key in [k for k in responses if re.fullmatch(r"[1-5]xx", k)]:
                responses[key.upper()] = responses.pop(key)


def _normalize_nullable_refs(node: Any) -> int:
    """Rewrite each {allOf: [X], nullable: true} without a type as anyOf X or null.

    Hetzner's document marks nullable references that way, e.g. action.error,
    which the API sets to null on success ("otherwise null"). Under OpenAPI
    3.0.3, nullable applies only beside a type in the same schema object, so
    openapi-schema-validator would reject every null there. Return the count
    of rewritten schemas.
    """
    count = 0
    if isinstance(node, dict):
        all_of = node.get("allOf")
        if (
            node.get("nullable") is True
            and "type" not in node
            and isinstance(all_of, list)
            and len(all_of) == 1
        ):
            del node["allOf"]
            node["anyOf"] = [all_of[0], {"type": "object", "nullable": True, "enum": [None]}]
            count += 1
        for value in node.values():
            count += _normalize_nullable_refs(value)
    elif isinstance(node, list):
        for value in node:
            count += _normalize_nullable_refs(value)
    return count


@functools.cache
def load_spec(path: Path = SPEC_PATH) -> LoadedSpec:
    """Parse and check the OpenAPI document at PATH once per process.

    Two constructs of Hetzner's document are rewritten first, so that the
    checks read it as its authors meant: lower-case response ranges and
    nullable references (see the two _normalize functions).
    """
    started = time.perf_counter()
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    _normalize_response_ranges(document)
    _normalize_nullable_refs(document)
    openapi = OpenAPI.from_dict(document)
    elapsed = time.perf_counter() - started
    log.info("parsed OpenAPI document %s in %.2f s", path, elapsed)
    return LoadedSpec(openapi=openapi, path=Path(path), load_seconds=elapsed)


class _SpecRequest(WerkzeugOpenAPIRequest):
    """A werkzeug request presented to openapi-core as one sent to the real API host."""

    @property
    def host_url(self) -> str:
        return SPEC_SERVER


def _describe_validation_error(error: Exception) -> str:
    parts = [str(error)]
    cause = error.__cause__
    while cause is not None:
        schema_errors = getattr(cause, "schema_errors", None)
        if schema_errors:
            parts.extend(
                f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in schema_errors
            )
            break
        parts.append(str(cause))
        cause = cause.__cause__
    return "; ".join(parts)


# ---------------------------------------------------------------------------
# Labels, label selectors, SSH keys


def label_problems(labels: Any) -> list[str]:
    """Return what is wrong with LABELS by the API's label rules (empty if valid)."""
    if not isinstance(labels, dict):
        return ["labels must be an object"]
    problems = []
    for key, value in labels.items():
        match = _LABEL_KEY.match(key) if isinstance(key, str) else None
        if match is None:
            problems.append(f"invalid label key {key!r}")
        elif match.group("prefix") == "hetzner.cloud":
            problems.append(f"label key prefix hetzner.cloud/ is reserved: {key!r}")
        elif match.group("prefix") and len(match.group("prefix")) > 253:
            problems.append(f"label key prefix longer than 253 characters: {key!r}")
        if not isinstance(value, str) or not _LABEL_VALUE.match(value):
            problems.append(f"invalid label value {value!r} for key {key!r}")
    return problems


def _split_selector(selector: str) -> list[str]:
    terms, depth, current = [], 0, []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    terms.append("".join(current).strip())
    return terms


_SET_TERM = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s+\((?P<values>[^()]*)\)$")
_EQ_TERM = re.compile(r"^(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^=!\s]*)$")


def parse_label_selector(selector: str) -> Callable[[dict[str, str]], bool]:
    """Compile SELECTOR (the API's label selector language) into a predicate.

    Raises ValueError for a term the language does not define.
    """
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_selector(selector):
        if not term:
            raise ValueError(f"empty term in label selector {selector!r}")
        if match := _SET_TERM.match(term):
            key, values = match["key"], {v.strip() for v in match["values"].split(",")}
            if match["op"] == "in":
                tests.append(lambda labels, k=key, vs=values: k in labels and labels[k] in vs)
            else:
                tests.append(
                    lambda labels, k=key, vs=values: k not in labels or labels[k] not in vs
                )
        elif match := _EQ_TERM.match(term):
            key, value = match["key"], match["value"]
            if match["op"] == "!=":
                tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!") and _LABEL_KEY.match(term[1:]):
            tests.append(lambda labels, k=term[1:]: k not in labels)
        elif _LABEL_KEY.match(term):
            tests.append(lambda labels, k=term: k in labels)
        else:
            raise ValueError(f"invalid label selector term {term!r}")
    return lambda labels: all(test(labels) for test in tests)


def md5_fingerprint(public_key: str) -> str:
    """Return the colon-separated MD5 fingerprint that the API shows for an OpenSSH public key.

    Raises ValueError if PUBLIC_KEY is not "<type> <base64 blob> [comment]".
    """
    fields = public_key.strip().split()
    if len(fields) < 2:
        raise ValueError("expected '<type> <base64> [comment]'")
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except ValueError as exc:
        raise ValueError("the key is not valid base64") from exc
    # The blob starts with the key type as an SSH string (4-byte length, name).
    type_length = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + type_length] != fields[0].encode():
        raise ValueError("the key type does not match the key data")
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


# ---------------------------------------------------------------------------
# Test controls


@dataclass(frozen=True)
class ServerCreateRequest:
    """What a POST /servers asked for, handed to the on_server_create hook."""

    server_id: int
    name: str
    server_type: str
    architecture: str
    image: str
    location: str
    user_data: str | None
    ssh_public_keys: tuple[str, ...]
    labels: dict[str, str]


@dataclass(frozen=True)
class ServerAddresses:
    """Addresses an on_server_create hook gives the new server."""

    ipv4: str
    # The /64 network, e.g. "2001:db8:1::/64"; None gives the server no IPv6.
    ipv6_network: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake handled. Headers are not kept, so the token is not either."""

    method: str
    route: str
    path: str
    query: dict[str, list[str]]
    body: Any
    status: int


@dataclass
class _Injection:
    route: str
    code: str
    message: str
    details: dict[str, Any] | None
    status: int
    remaining: int
    after_effect: bool


@dataclass
class _ActionControl:
    command: str
    remaining: int
    code: str = "action_failed"
    message: str = "Action failed"
    stall: bool = False


class ApiError(Exception):
    """An error reply: HTTP status, error code, message and details."""

    def __init__(
        self,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        status: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details
        self.status = status or ERROR_STATUS[code]


def _invalid_field(name: str, message: str) -> ApiError:
    return ApiError(
        "invalid_input",
        f"invalid input in field '{name}': {message}",
        {"fields": [{"name": name, "messages": [message]}]},
    )


# ---------------------------------------------------------------------------
# The fake

_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/actions", "list_actions"),
    ("GET", "/actions/{id}", "get_action"),
    ("GET", "/locations", "list_locations"),
    ("GET", "/locations/{id}", "get_location"),
    ("GET", "/server_types", "list_server_types"),
    ("GET", "/server_types/{id}", "get_server_type"),
    ("GET", "/images", "list_images"),
    ("GET", "/images/{id}", "get_image"),
    ("GET", "/ssh_keys", "list_ssh_keys"),
    ("POST", "/ssh_keys", "create_ssh_key"),
    ("GET", "/ssh_keys/{id}", "get_ssh_key"),
    ("DELETE", "/ssh_keys/{id}", "delete_ssh_key"),
    ("GET", "/firewalls", "list_firewalls"),
    ("POST", "/firewalls", "create_firewall"),
    ("GET", "/firewalls/{id}", "get_firewall"),
    ("DELETE", "/firewalls/{id}", "delete_firewall"),
    ("POST", "/firewalls/{id}/actions/set_rules", "set_firewall_rules"),
    ("POST", "/firewalls/{id}/actions/apply_to_resources", "apply_firewall"),
    ("POST", "/firewalls/{id}/actions/remove_from_resources", "remove_firewall"),
    ("GET", "/servers", "list_servers"),
    ("POST", "/servers", "create_server"),
    ("GET", "/servers/{id}", "get_server"),
    ("DELETE", "/servers/{id}", "delete_server"),
)
ROUTES = frozenset(f"{method} {template}" for method, template, _ in _ROUTES)


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        log.debug("fake hcloud API: " + message, *args)


class FakeHetznerCloud:
    """A stateful Hetzner Cloud API on 127.0.0.1, checked against the OpenAPI document.

    `action_polls` is how many reads of an action return "running" before it
    finishes; 0 makes actions finish as soon as they are created.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        spec_path: Path = SPEC_PATH,
        action_polls: int = 1,
        now: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.token = token if token is not None else "fake-" + secrets.token_hex(24)
        self.spec = load_spec(Path(spec_path))
        self.action_polls = action_polls
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._url_map = Map(
            [
                Rule(
                    API_PREFIX + re.sub(r"\{(\w+)\}", r"<int:\1>", t),
                    methods=[m],
                    endpoint=(m, t, e),
                )
                for m, t, e in _ROUTES
            ],
            strict_slashes=False,
        )

        self.violations: list[str] = []
        self.hook_errors: list[str] = []
        self.requests: list[RecordedRequest] = []

        now_value = self._now()
        self.locations = catalog.locations()
        self.datacenters = catalog.datacenter_names()
        self.server_types = catalog.server_types(now_value)
        self.images = catalog.images(now_value)
        self.ssh_keys: dict[int, dict[str, Any]] = {}
        self.firewalls: dict[int, dict[str, Any]] = {}
        self.servers: dict[int, dict[str, Any]] = {}
        self.actions: dict[int, dict[str, Any]] = {}
        self._action_effects: dict[int, Callable[[bool], None]] = {}
        self._action_polls_left: dict[int, int] = {}
        self._out_of_stock: set[tuple[str, str]] = set()
        self._injections: list[_Injection] = []
        # [route, seconds, requests left]
        self._delays: list[list[Any]] = []
        self._action_controls: list[_ActionControl] = []
        self._create_hook: Callable[[ServerCreateRequest], ServerAddresses | None] | None = None
        self._delete_hook: Callable[[int, str], None] | None = None
        self._rate_limit = DEFAULT_RATE_LIMIT
        self._rate_remaining = float(DEFAULT_RATE_LIMIT)
        self._rate_checked = time.monotonic()

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake Hetzner Cloud API is not running")
        return self._server.server_port

    @property
    def endpoint(self) -> str:
        """Base URL to pass to hcloud.Client(api_endpoint=...)."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    def start(self, ready_timeout: float = 5.0) -> FakeHetznerCloud:
        """Serve on a free loopback port in a daemon thread; return once it accepts connections."""
        self._server = make_server(
            "127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        server = self._server
        # serve_forever checks for shutdown every poll_interval seconds, so
        # stop() waits up to that long.
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.02),
            name="fake-hcloud-api",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + ready_timeout
        for _attempt in range(1000):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    break
                threading.Event().wait(0.01)
        self.stop()
        raise RuntimeError(
            f"fake Hetzner Cloud API did not accept connections within {ready_timeout} s"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and join the server thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"fake Hetzner Cloud API thread did not stop within {timeout} s")
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeHetznerCloud:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def check(self) -> None:
        """Raise AssertionError if a request or reply broke the OpenAPI document or a hook failed."""
        problems = [*self.violations, *self.hook_errors]
        if problems:
            raise AssertionError(
                "fake Hetzner Cloud API recorded problems:\n" + "\n".join(problems)
            )

    # -- test controls -----------------------------------------------------

    def fail_next(
        self,
        route: str,
        code: str,
        *,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        times: int = 1,
        status: int | None = None,
    ) -> None:
        """Reply to the next TIMES requests on ROUTE (e.g. "POST /servers") with an error.

        The request has no effect. STATUS defaults to the documented status of CODE.
        """
        self._inject(route, code, message, details, times, status, after_effect=False)

    def fail_after_create(
        self,
        route: str,
        code: str = "timeout",
        *,
        message: str | None = None,
        details: dict[str, Any] | None = None,
        times: int = 1,
        status: int | None = None,
    ) -> None:
        """Carry out the next TIMES requests on ROUTE, then reply with an error.

        This is a reply lost after the resource was created, as with a gateway
        timeout: the caller sees an error although the resource exists.
        """
        self._inject(route, code, message, details, times, status, after_effect=True)

    def _inject(
        self,
        route: str,
        code: str,
        message: str | None,
        details: dict[str, Any] | None,
        times: int,
        status: int | None,
        *,
        after_effect: bool,
    ) -> None:
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; known: {sorted(ROUTES)}")
        if status is None and code not in ERROR_STATUS:
            raise ValueError(f"no documented HTTP status for error code {code!r}; pass status=")
        with self._lock:
            self._injections.append(
                _Injection(
                    route=route,
                    code=code,
                    message=message or f"injected {code}",
                    details=details,
                    status=status or ERROR_STATUS[code],
                    remaining=times,
                    after_effect=after_effect,
                )
            )

    def fail_action(
        self,
        command: str,
        *,
        code: str = "action_failed",
        message: str = "Action failed",
        times: int = 1,
    ) -> None:
        """Make the next TIMES actions with COMMAND (e.g. "create_server") finish with an error."""
        with self._lock:
            self._action_controls.append(_ActionControl(command, times, code, message))

    def delay_next(self, route: str, seconds: float, *, times: int = 1) -> None:
        """Hold the reply to the next TIMES requests on ROUTE for SECONDS, to make clients time out."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r}; known: {sorted(ROUTES)}")
        with self._lock:
            self._delays.append([route, seconds, times])

    def stall_action(self, command: str, *, times: int = 1) -> None:
        """Keep the next TIMES actions with COMMAND in status "running" for good."""
        with self._lock:
            self._action_controls.append(_ActionControl(command, times, stall=True))

    def set_out_of_stock(self, server_type: str, location: str, out_of_stock: bool = True) -> None:
        """Mark SERVER_TYPE as out of stock in LOCATION, or back in stock.

        Out of stock, the type's location entry reads "available": false and
        POST /servers returns 412 resource_unavailable for it.
        """
        with self._lock:
            if out_of_stock:
                self._out_of_stock.add((server_type, location))
            else:
                self._out_of_stock.discard((server_type, location))

    def set_rate_limit(self, limit: int, remaining: int | None = None) -> None:
        """Set the hourly request limit and how many requests remain now."""
        with self._lock:
            self._rate_limit = limit
            self._rate_remaining = float(limit if remaining is None else remaining)
            self._rate_checked = time.monotonic()

    def on_server_create(
        self, callback: Callable[[ServerCreateRequest], ServerAddresses | None]
    ) -> None:
        """Call CALLBACK for each new server; it may return the server's addresses.

        Without a callback, or when it returns None, the server gets an IPv4
        address from 203.0.113.0/24 and an IPv6 network from 2001:db8::/32
        (documentation ranges, never contacted). The callback runs while the
        POST /servers request waits; an exception in it becomes a 500
        server_error reply and is recorded in `hook_errors`.
        """
        self._create_hook = callback

    def on_server_delete(self, callback: Callable[[int, str], None]) -> None:
        """Call CALLBACK(server_id, name) when a server is deleted."""
        self._delete_hook = callback

    def add_ssh_key(
        self, name: str, public_key: str, labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Create an SSH key as if another tool had made it; return its API object."""
        with self._lock:
            return self._create_ssh_key(
                {"name": name, "public_key": public_key, "labels": labels or {}}
            )

    def add_server(self, name: str, **request: Any) -> dict[str, Any]:
        """Create a running server as if another tool had made it; return its API object."""
        body = {
            "server_type": "cx23",
            "image": "debian-12",
            "location": "fsn1",
            **request,
            "name": name,
        }
        with self._lock:
            reply = self._create_server(body)
            for action in [reply["action"], *reply["next_actions"]]:
                self._finish_action(action["id"], success=True)
            return self._render_server(self.servers[reply["server"]["id"]])

    def requests_to(self, route: str) -> list[RecordedRequest]:
        """Return the recorded requests on ROUTE, e.g. "POST /servers"."""
        return [r for r in self.requests if r.route == route]

    # -- WSGI entry point --------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        request = Request(environ)
        delay = self._take_delay(request)
        if delay:
            # Outside the lock, so that retried requests are delayed side by side.
            threading.Event().wait(delay)
        with self._lock:
            response = self._handle(request)
        return response(environ, start_response)

    def _take_delay(self, request: Request) -> float:
        try:
            (method, template, _), _ = self._url_map.bind_to_environ(request.environ).match()
        except (NotFound, MethodNotAllowed):
            return 0.0
        with self._lock:
            for delay in self._delays:
                if delay[0] == f"{method} {template}" and delay[2] > 0:
                    delay[2] -= 1
                    return delay[1]
        return 0.0

    def _handle(self, request: Request) -> Response:
        request.get_data()  # read once; openapi-core and the handlers reuse it
        label = f"{request.method} {request.full_path.rstrip('?')}"
        for error in self._validate_request(request):
            self.violations.append(f"{label}: request does not match the OpenAPI document: {error}")

        route, handler, params = "", None, {}
        try:
            (method, template, endpoint), params = self._url_map.bind_to_environ(
                request.environ
            ).match()
            route = f"{method} {template}"
            handler = getattr(self, "_op_" + endpoint)
        except NotFound:
            pass
        except MethodNotAllowed:
            route = "method_not_allowed"

        body = None
        status, payload, headers = 500, None, {}
        try:
            self._take_rate_limit_token()
            self._check_token(request)
            if route == "method_not_allowed":
                raise ApiError("method_not_allowed", f"method {request.method} is not allowed")
            if handler is None:
                raise ApiError("not_found", f"{request.path} not found")
            body = self._json_body(request)
            injection = self._take_injection(route)
            if injection is not None and not injection.after_effect:
                raise ApiError(
                    injection.code, injection.message, injection.details, status=injection.status
                )
            status, payload = handler(request, body, **params)
            if injection is not None:
                raise ApiError(
                    injection.code, injection.message, injection.details, status=injection.status
                )
        except ApiError as error:
            status = error.status
            payload = {
                "error": {"code": error.code, "message": error.message, "details": error.details}
            }
        if status == 200 and isinstance(payload, dict) and "meta" in payload:
            headers["Link"] = payload.pop("_link", "")
            if not headers["Link"]:
                del headers["Link"]
        headers.update(self._rate_limit_headers())
        if status == 429:
            headers["RateLimit-Remaining"] = "0"

        response = Response(
            json.dumps(payload) if payload is not None else None,
            status=status,
            headers=headers,
            mimetype="application/json" if payload is not None else None,
        )
        if payload is None:
            response.headers.pop("Content-Type", None)
        for error in self._validate_response(request, response):
            self.violations.append(
                f"{label}: reply {status} does not match the OpenAPI document: {error}"
            )
        self.requests.append(
            RecordedRequest(
                method=request.method,
                route=route,
                path=request.path,
                query={k: request.args.getlist(k) for k in request.args},
                body=body,
                status=status,
            )
        )
        return response

    def _validate_request(self, request: Request) -> list[str]:
        try:
            self.spec.openapi.validate_request(_SpecRequest(request))
        except Exception as error:  # openapi-core raises a family of unrelated exception types
            return [_describe_validation_error(error)]
        return []

    def _validate_response(self, request: Request, response: Response) -> list[str]:
        try:
            self.spec.openapi.validate_response(
                _SpecRequest(request), WerkzeugOpenAPIResponse(response)
            )
        except Exception as error:  # openapi-core raises a family of unrelated exception types
            return [_describe_validation_error(error)]
        return []

    def _check_token(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme != "Bearer" or not secrets.compare_digest(given.encode(), self.token.encode()):
            raise ApiError("unauthorized", "unable to authenticate")

    def _take_rate_limit_token(self) -> None:
        now = time.monotonic()
        refill = (now - self._rate_checked) * self._rate_limit / 3600.0
        self._rate_remaining = min(float(self._rate_limit), self._rate_remaining + refill)
        self._rate_checked = now
        if self._rate_remaining < 1:
            raise ApiError(
                "rate_limit_exceeded", f"limit of {self._rate_limit} requests per hour reached"
            )
        self._rate_remaining -= 1

    def _rate_limit_headers(self) -> dict[str, str]:
        missing = self._rate_limit - self._rate_remaining
        reset = time.time() + missing * 3600.0 / max(self._rate_limit, 1)
        return {
            "RateLimit-Limit": str(self._rate_limit),
            "RateLimit-Remaining": str(int(self._rate_remaining)),
            "RateLimit-Reset": str(int(reset)),
        }

    def _take_injection(self, route: str) -> _Injection | None:
        for injection in self._injections:
            if injection.route == route and injection.remaining > 0:
                injection.remaining -= 1
                return injection
        return None

    @staticmethod
    def _json_body(request: Request) -> Any:
        data = request.get_data()
        if request.method not in ("POST", "PUT"):
            return None
        if not data:
            return {}
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise ApiError("json_error", f"invalid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError("json_error", "the request body must be a JSON object")
        return body

    # -- helpers -----------------------------------------------------------

    def _next_id(self) -> int:
        return next(self._ids)

    def _timestamp(self) -> str:
        return catalog.timestamp(self._now())

    def _paginate(
        self, request: Request, key: str, items: list[dict[str, Any]]
    ) -> tuple[int, dict[str, Any]]:
        page = max(1, int(request.args.get("page", 1)))
        per_page = min(MAX_PER_PAGE, max(1, int(request.args.get("per_page", DEFAULT_PER_PAGE))))
        last_page = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page : page * per_page]

        def link(to_page: int) -> str:
            query = [
                (k, v)
                for k in request.args
                for v in request.args.getlist(k)
                if k not in ("page", "per_page")
            ]
            query += [("page", str(to_page)), ("per_page", str(per_page))]
            return f"<{self.endpoint}{request.path[len(API_PREFIX) :]}?{urlencode(query)}>"

        links = []
        if page > 1:
            links.append(f'{link(page - 1)}; rel="prev"')
        if page < last_page:
            links.append(f'{link(page + 1)}; rel="next"')
        links.append(f'{link(last_page)}; rel="last"')
        return 200, {
            key: chunk,
            "meta": {
                "pagination": {
                    "page": page,
                    "per_page": per_page,
                    "previous_page": page - 1 if page > 1 else None,
                    "next_page": page + 1 if page < last_page else None,
                    "last_page": last_page,
                    "total_entries": len(items),
                }
            },
            "_link": ", ".join(links),
        }

    @staticmethod
    def _sorted(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items = sorted(items, key=lambda item: item["id"])
        for spec in reversed(request.args.getlist("sort")):
            field_name, _, direction = spec.partition(":")
            items.sort(key=lambda item, f=field_name: item[f], reverse=direction == "desc")
        return items

    @staticmethod
    def _label_filter(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        selector = request.args.get("label_selector")
        if selector is None:
            return items
        try:
            matches = parse_label_selector(selector)
        except ValueError as exc:
            raise _invalid_field("label_selector", str(exc)) from None
        return [item for item in items if matches(item.get("labels", {}))]

    @staticmethod
    def _find(
        items: list[dict[str, Any]], id_or_name: Any, kind: str, field_name: str
    ) -> dict[str, Any]:
        for item in items:
            if str(item["id"]) == str(id_or_name) or item.get("name") == id_or_name:
                return item
        # NOTE: the documentation names no error code for an unknown server
        # type, image, location or SSH key in a request body; invalid_input
        # is a guess.
        raise _invalid_field(field_name, f"{kind} {id_or_name!r} not found")

    def _get(self, table: dict[int, dict[str, Any]], resource_id: int, kind: str) -> dict[str, Any]:
        if resource_id not in table:
            raise ApiError("not_found", f"{kind} with ID {resource_id} not found")
        return table[resource_id]

    # -- actions -----------------------------------------------------------

    def _new_action(
        self,
        command: str,
        resources: list[tuple[str, int]],
        effect: Callable[[bool], None] | None = None,
    ) -> dict[str, Any]:
        action_id = self._next_id()
        action = {
            "id": action_id,
            "command": command,
            "status": "running",
            "progress": 0,
            "started": self._timestamp(),
            "finished": None,
            "resources": [{"id": rid, "type": rtype} for rtype, rid in resources],
            "error": None,
        }
        self.actions[action_id] = action
        if effect is not None:
            self._action_effects[action_id] = effect
        control = next(
            (c for c in self._action_controls if c.command == command and c.remaining > 0), None
        )
        if control is not None:
            control.remaining -= 1
            if control.stall:
                self._action_polls_left[action_id] = -1
                return self._render_action(action)
            action["_failure"] = (control.code, control.message)
        self._action_polls_left[action_id] = self.action_polls
        if self.action_polls == 0:
            self._finish_action(action_id)
        return self._render_action(action)

    def _finish_action(self, action_id: int, success: bool | None = None) -> None:
        action = self.actions[action_id]
        if action["status"] != "running":
            return
        failure = action.pop("_failure", None)
        ok = failure is None if success is None else success
        action["status"] = "success" if ok else "error"
        action["progress"] = 100
        action["finished"] = self._timestamp()
        if not ok:
            code, message = failure or ("action_failed", "Action failed")
            action["error"] = {"code": code, "message": message}
        self._action_polls_left[action_id] = 0
        effect = self._action_effects.pop(action_id, None)
        if effect is not None:
            effect(ok)

    def _poll_action(self, action_id: int) -> dict[str, Any]:
        action = self._get(self.actions, action_id, "action")
        left = self._action_polls_left.get(action_id, 0)
        if action["status"] == "running" and left >= 0:
            if left <= 1:
                self._finish_action(action_id)
            else:
                self._action_polls_left[action_id] = left - 1
                action["progress"] = min(99, action["progress"] + 50)
        return self._render_action(action)

    @staticmethod
    def _render_action(action: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in action.items() if not k.startswith("_")}

    def _op_get_action(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        return 200, {"action": self._poll_action(id)}

    def _op_list_actions(self, request: Request, body: Any) -> tuple[int, Any]:
        ids = [int(value) for value in request.args.getlist("id")]
        return 200, {"actions": [self._poll_action(action_id) for action_id in ids]}

    # -- catalogue ---------------------------------------------------------

    def _op_list_locations(self, request: Request, body: Any) -> tuple[int, Any]:
        items = [loc for loc in self.locations if request.args.get("name") in (None, loc["name"])]
        return self._paginate(request, "locations", self._sorted(request, copy.deepcopy(items)))

    def _op_get_location(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        for location in self.locations:
            if location["id"] == id:
                return 200, {"location": copy.deepcopy(location)}
        raise ApiError("not_found", f"location with ID {id} not found")

    def _render_server_type(self, server_type: dict[str, Any]) -> dict[str, Any]:
        rendered = copy.deepcopy(server_type)
        for entry in rendered["locations"]:
            if (server_type["name"], entry["name"]) in self._out_of_stock:
                entry["available"] = False
                entry["recommended"] = False
        return rendered

    def _op_list_server_types(self, request: Request, body: Any) -> tuple[int, Any]:
        items = [
            self._render_server_type(st)
            for st in self.server_types
            if request.args.get("name") in (None, st["name"])
        ]
        return self._paginate(request, "server_types", items)

    def _op_get_server_type(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        for server_type in self.server_types:
            if server_type["id"] == id:
                return 200, {"server_type": self._render_server_type(server_type)}
        raise ApiError("not_found", f"server type with ID {id} not found")

    def _op_list_images(self, request: Request, body: Any) -> tuple[int, Any]:
        args = request.args
        now = catalog.timestamp(self._now())
        items = []
        for image in self.images:
            if args.get("name") not in (None, image["name"]):
                continue
            if args.getlist("architecture") and image["architecture"] not in args.getlist(
                "architecture"
            ):
                continue
            if args.getlist("type") and image["type"] not in args.getlist("type"):
                continue
            if args.getlist("status") and image["status"] not in args.getlist("status"):
                continue
            deprecated = image["deprecated"] is not None and image["deprecated"] <= now
            if deprecated and args.get("include_deprecated") != "true":
                continue
            items.append(copy.deepcopy(image))
        items = self._label_filter(request, items)
        return self._paginate(request, "images", self._sorted(request, items))

    def _op_get_image(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        for image in self.images:
            if image["id"] == id:
                return 200, {"image": copy.deepcopy(image)}
        raise ApiError("not_found", f"image with ID {id} not found")

    # -- SSH keys ----------------------------------------------------------

    def _op_list_ssh_keys(self, request: Request, body: Any) -> tuple[int, Any]:
        items = [
            copy.deepcopy(key)
            for key in self.ssh_keys.values()
            if request.args.get("name") in (None, key["name"])
            and request.args.get("fingerprint") in (None, key["fingerprint"])
        ]
        items = self._label_filter(request, items)
        return self._paginate(request, "ssh_keys", self._sorted(request, items))

    def _op_get_ssh_key(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        return 200, {"ssh_key": copy.deepcopy(self._get(self.ssh_keys, id, "SSH key"))}

    def _op_create_ssh_key(self, request: Request, body: Any) -> tuple[int, Any]:
        return 201, {"ssh_key": copy.deepcopy(self._create_ssh_key(body))}

    def _create_ssh_key(self, body: dict[str, Any]) -> dict[str, Any]:
        name, public_key = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not name:
            raise _invalid_field("name", "is required")
        if not isinstance(public_key, str):
            raise _invalid_field("public_key", "is required")
        if problems := label_problems(body.get("labels", {})):
            raise _invalid_field("labels", "; ".join(problems))
        try:
            fingerprint = md5_fingerprint(public_key)
        except ValueError as exc:
            raise _invalid_field("public_key", f"invalid public key: {exc}") from None
        for key in self.ssh_keys.values():
            if key["name"] == name:
                raise ApiError(
                    "uniqueness_error",
                    "SSH key with the same name already exists",
                    {"fields": [{"name": "name"}]},
                )
            if key["fingerprint"] == fingerprint:
                raise ApiError(
                    "uniqueness_error",
                    "SSH key with the same fingerprint already exists",
                    {"fields": [{"name": "public_key"}]},
                )
        key_id = self._next_id()
        self.ssh_keys[key_id] = {
            "id": key_id,
            "name": name,
            "fingerprint": fingerprint,
            "public_key": public_key.strip(),
            "labels": dict(body.get("labels") or {}),
            "created": self._timestamp(),
        }
        return self.ssh_keys[key_id]

    def _op_delete_ssh_key(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        self._get(self.ssh_keys, id, "SSH key")
        del self.ssh_keys[id]
        return 204, None

    # -- firewalls ---------------------------------------------------------

    @staticmethod
    def _check_rules(rules: Any) -> list[dict[str, Any]]:
        if not isinstance(rules, list):
            raise _invalid_field("rules", "must be a list")
        if len(rules) > 50:
            raise _invalid_field("rules", "at most 50 rules per firewall")
        normalized = []
        for index, rule in enumerate(rules):
            where = f"rules[{index}]"
            direction, protocol, port = (
                rule.get("direction"),
                rule.get("protocol"),
                rule.get("port"),
            )
            if direction not in ("in", "out"):
                raise _invalid_field(f"{where}.direction", "must be in or out")
            if protocol in ("tcp", "udp"):
                if not isinstance(port, str) or not re.fullmatch(r"\d{1,5}(-\d{1,5})?|any", port):
                    raise _invalid_field(
                        f"{where}.port", "a port or port range is required for tcp and udp"
                    )
            elif port is not None:
                raise _invalid_field(
                    f"{where}.port", f"port is not allowed for protocol {protocol}"
                )
            source, destination = rule.get("source_ips", []), rule.get("destination_ips", [])
            if direction == "in" and not source:
                raise _invalid_field(f"{where}.source_ips", "is required for direction in")
            if direction == "out" and not destination:
                raise _invalid_field(f"{where}.destination_ips", "is required for direction out")
            for network in [*source, *destination]:
                try:
                    ipaddress.ip_network(network, strict=True)
                except ValueError:
                    raise _invalid_field(
                        f"{where}.source_ips", f"invalid CIDR {network!r}"
                    ) from None
            normalized.append(
                {
                    "direction": direction,
                    "protocol": protocol,
                    "port": port,
                    "source_ips": list(source),
                    "destination_ips": list(destination),
                    "description": rule.get("description"),
                }
            )
        return normalized

    def _render_firewall(self, firewall: dict[str, Any]) -> dict[str, Any]:
        applied_to = []
        for entry in firewall["applied_to"]:
            if entry["type"] == "server":
                applied_to.append({"type": "server", "server": {"id": entry["server"]["id"]}})
            else:
                matches = parse_label_selector(entry["label_selector"]["selector"])
                applied_to.append(
                    {
                        "type": "label_selector",
                        "label_selector": dict(entry["label_selector"]),
                        "applied_to_resources": [
                            {"type": "server", "server": {"id": server_id}}
                            for server_id, server in sorted(self.servers.items())
                            if matches(server["labels"])
                        ],
                    }
                )
        return {
            **copy.deepcopy({k: v for k, v in firewall.items() if k != "applied_to"}),
            "applied_to": applied_to,
        }

    def _op_list_firewalls(self, request: Request, body: Any) -> tuple[int, Any]:
        items = [
            self._render_firewall(fw)
            for fw in self.firewalls.values()
            if request.args.get("name") in (None, fw["name"])
        ]
        items = self._label_filter(request, items)
        return self._paginate(request, "firewalls", self._sorted(request, items))

    def _op_get_firewall(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        return 200, {"firewall": self._render_firewall(self._get(self.firewalls, id, "firewall"))}

    def _op_create_firewall(self, request: Request, body: Any) -> tuple[int, Any]:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid_field("name", "is required")
        if any(fw["name"] == name for fw in self.firewalls.values()):
            raise ApiError(
                "uniqueness_error",
                "firewall with the same name already exists",
                {"fields": [{"name": "name"}]},
            )
        if problems := label_problems(body.get("labels", {})):
            raise _invalid_field("labels", "; ".join(problems))
        rules = self._check_rules(body.get("rules", []))
        targets = self._check_targets(body.get("apply_to", []), field_name="apply_to")
        firewall_id = self._next_id()
        self.firewalls[firewall_id] = {
            "id": firewall_id,
            "name": name,
            "labels": dict(body.get("labels") or {}),
            "rules": rules,
            "applied_to": [],
            "created": self._timestamp(),
        }
        actions = [self._attach_firewall(firewall_id, target) for target in targets]
        return 201, {
            "firewall": self._render_firewall(self.firewalls[firewall_id]),
            "actions": actions,
        }

    def _check_targets(self, entries: Any, field_name: str) -> list[dict[str, Any]]:
        if not isinstance(entries, list):
            raise _invalid_field(field_name, "must be a list")
        seen: set[int] = set()
        targets = []
        for entry in entries:
            if entry.get("type") == "server":
                server_id = (entry.get("server") or {}).get("id")
                if server_id not in self.servers:
                    raise ApiError(
                        "firewall_resource_not_found", f"server with ID {server_id} not found"
                    )
                if server_id in seen:
                    raise ApiError(
                        "server_already_added", f"server {server_id} was given more than once"
                    )
                seen.add(server_id)
                targets.append({"type": "server", "server": {"id": server_id}})
            elif entry.get("type") == "label_selector":
                selector = (entry.get("label_selector") or {}).get("selector", "")
                try:
                    parse_label_selector(selector)
                except ValueError as exc:
                    raise _invalid_field(f"{field_name}.label_selector", str(exc)) from None
                targets.append({"type": "label_selector", "label_selector": {"selector": selector}})
            else:
                raise _invalid_field(f"{field_name}.type", "must be server or label_selector")
        return targets

    def _attach_firewall(self, firewall_id: int, target: dict[str, Any]) -> dict[str, Any]:
        firewall = self.firewalls[firewall_id]
        firewall["applied_to"].append(target)
        if target["type"] != "server":
            return self._new_action("apply_firewall", [("firewall", firewall_id)])
        server_id = target["server"]["id"]
        entry = {"id": firewall_id, "status": "pending"}
        self.servers[server_id]["firewalls"].append(entry)

        def applied(ok: bool) -> None:
            if ok:
                entry["status"] = "applied"

        return self._new_action(
            "apply_firewall", [("firewall", firewall_id), ("server", server_id)], applied
        )

    def _op_set_firewall_rules(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        firewall = self._get(self.firewalls, id, "firewall")
        firewall["rules"] = self._check_rules(body.get("rules"))
        actions = [self._new_action("set_firewall_rules", [("firewall", id)])]
        for entry in firewall["applied_to"]:
            if entry["type"] == "server":
                resources = [("firewall", id), ("server", entry["server"]["id"])]
                actions.append(self._new_action("apply_firewall", resources))
        return 201, {"actions": actions}

    def _op_apply_firewall(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        firewall = self._get(self.firewalls, id, "firewall")
        targets = self._check_targets(body.get("apply_to"), field_name="apply_to")
        for target in targets:
            if target in firewall["applied_to"]:
                raise ApiError(
                    "firewall_already_applied", f"firewall {id} is already applied to {target}"
                )
        return 201, {"actions": [self._attach_firewall(id, target) for target in targets]}

    def _op_remove_firewall(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        firewall = self._get(self.firewalls, id, "firewall")
        targets = self._check_targets(body.get("remove_from"), field_name="remove_from")
        actions = []
        for target in targets:
            if target not in firewall["applied_to"]:
                raise ApiError(
                    "firewall_already_removed", f"firewall {id} is not applied to {target}"
                )
        for target in targets:
            firewall["applied_to"].remove(target)
            resources = [("firewall", id)]
            if target["type"] == "server":
                server_id = target["server"]["id"]
                server = self.servers[server_id]
                server["firewalls"] = [f for f in server["firewalls"] if f["id"] != id]
                resources.append(("server", server_id))
            actions.append(self._new_action("remove_firewall", resources))
        return 201, {"actions": actions}

    def _op_delete_firewall(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        firewall = self._get(self.firewalls, id, "firewall")
        if firewall["applied_to"]:
            raise ApiError("resource_in_use", f"firewall {id} is still applied to a resource")
        del self.firewalls[id]
        return 204, None

    # -- servers -----------------------------------------------------------

    def _render_server(self, server: dict[str, Any]) -> dict[str, Any]:
        location = next(loc for loc in self.locations if loc["name"] == server["location"])
        server_type = next(st for st in self.server_types if st["name"] == server["server_type"])
        image = next(img for img in self.images if img["id"] == server["image_id"])
        type_ids = [
            st["id"]
            for st in self.server_types
            if location["name"] in {x["name"] for x in st["locations"]}
        ]
        available = [
            st["id"]
            for st in self.server_types
            if st["id"] in type_ids and (st["name"], location["name"]) not in self._out_of_stock
        ]
        ipv4, ipv6 = server["ipv4"], server["ipv6"]
        return {
            "id": server["id"],
            "name": server["name"],
            "status": server["status"],
            "created": server["created"],
            "labels": dict(server["labels"]),
            "server_type": self._render_server_type(server_type),
            "image": copy.deepcopy(image),
            "location": copy.deepcopy(location),
            "datacenter": {
                "id": location["id"],
                "name": self.datacenters[location["name"]],
                "description": f"{location['city']} data center",
                "location": copy.deepcopy(location),
                "server_types": {
                    "supported": type_ids,
                    "available": available,
                    "available_for_migration": available,
                },
            },
            "public_net": {
                "ipv4": None
                if ipv4 is None
                else {
                    "id": server["ipv4_id"],
                    "ip": ipv4,
                    "blocked": False,
                    "dns_ptr": "static."
                    + ".".join(reversed(ipv4.split(".")))
                    + ".clients.your-server.de",
                },
                "ipv6": None
                if ipv6 is None
                else {"id": server["ipv6_id"], "ip": ipv6, "blocked": False, "dns_ptr": []},
                "floating_ips": [],
                "firewalls": copy.deepcopy(server["firewalls"]),
            },
            "private_net": [],
            "backup_window": None,
            "iso": None,
            "placement_group": None,
            "load_balancers": [],
            "volumes": [],
            "locked": False,
            "rescue_enabled": False,
            "protection": {"delete": False, "rebuild": False},
            "primary_disk_size": server_type["disk"],
            "included_traffic": server_type["prices"][0]["included_traffic"],
            "ingoing_traffic": None,
            "outgoing_traffic": None,
        }

    def _op_list_servers(self, request: Request, body: Any) -> tuple[int, Any]:
        statuses = request.args.getlist("status")
        items = [
            self._render_server(server)
            for server in self.servers.values()
            if request.args.get("name") in (None, server["name"])
            and (not statuses or server["status"] in statuses)
        ]
        items = self._label_filter(request, items)
        return self._paginate(request, "servers", self._sorted(request, items))

    def _op_get_server(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        return 200, {"server": self._render_server(self._get(self.servers, id, "server"))}

    def _op_create_server(self, request: Request, body: Any) -> tuple[int, Any]:
        return 201, self._create_server(body)

    def _resolve_server_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """Check a create-server body; return the catalogue objects it names."""
        name = body.get("name")
        if not isinstance(name, str) or not _HOSTNAME.match(name):
            raise _invalid_field("name", "must be a valid hostname (RFC 1123)")
        if any(server["name"] == name for server in self.servers.values()):
            raise ApiError(
                "uniqueness_error",
                "server with the same name already exists",
                {"fields": [{"name": "name"}]},
            )
        if problems := label_problems(body.get("labels", {})):
            raise _invalid_field("labels", "; ".join(problems))
        user_data = body.get("user_data")
        if user_data is not None and len(user_data.encode("utf-8")) > USER_DATA_LIMIT:
            raise _invalid_field("user_data", "is too long")

        server_type = self._find(
            self.server_types, body.get("server_type"), "server type", "server_type"
        )
        if "datacenter" in body:
            raise _invalid_field("datacenter", "this fake only supports location")
        location = self._find(self.locations, body.get("location", "fsn1"), "location", "location")
        type_location = next(
            (x for x in server_type["locations"] if x["name"] == location["name"]), None
        )
        if type_location is None:
            raise _invalid_field(
                "server_type",
                f"server type {server_type['name']} is not supported in location {location['name']}",
            )
        deprecation = type_location["deprecation"]
        if deprecation is not None and deprecation["unavailable_after"] <= self._timestamp():
            raise ApiError(
                "resource_unavailable",
                f"server type {server_type['name']} is no longer available in {location['name']}",
            )
        if (server_type["name"], location["name"]) in self._out_of_stock:
            raise ApiError(
                "resource_unavailable",
                f"server type {server_type['name']} is currently not available in {location['name']}",
            )

        images = [img for img in self.images if img["architecture"] == server_type["architecture"]]
        image = self._find(
            images, body.get("image"), f"{server_type['architecture']} image", "image"
        )
        ssh_keys = [
            self._find(list(self.ssh_keys.values()), key, "SSH key", "ssh_keys")
            for key in body.get("ssh_keys", [])
        ]
        firewall_ids = []
        for entry in body.get("firewalls", []):
            firewall_id = entry.get("firewall")
            if firewall_id not in self.firewalls:
                raise _invalid_field("firewalls", f"firewall {firewall_id} not found")
            firewall_ids.append(firewall_id)
        public_net = body.get("public_net") or {}
        return {
            "name": name,
            "server_type": server_type,
            "location": location,
            "image": image,
            "ssh_keys": ssh_keys,
            "firewall_ids": firewall_ids,
            "user_data": user_data,
            "enable_ipv4": public_net.get("enable_ipv4", True),
            "enable_ipv6": public_net.get("enable_ipv6", True),
        }

    def _create_server(self, body: dict[str, Any]) -> dict[str, Any]:
        resolved = self._resolve_server_request(body)
        server_id = self._next_id()
        labels = dict(body.get("labels") or {})
        addresses = None
        if self._create_hook is not None:
            create_request = ServerCreateRequest(
                server_id=server_id,
                name=resolved["name"],
                server_type=resolved["server_type"]["name"],
                architecture=resolved["server_type"]["architecture"],
                image=resolved["image"]["name"],
                location=resolved["location"]["name"],
                user_data=resolved["user_data"],
                ssh_public_keys=tuple(key["public_key"] for key in resolved["ssh_keys"]),
                labels=dict(labels),
            )
            try:
                addresses = self._create_hook(create_request)
            except Exception as exc:  # report any hook failure to the test, then to the client
                self.hook_errors.append(
                    f"on_server_create hook failed for {resolved['name']}: {exc!r}"
                )
                raise ApiError("server_error", "the on_server_create hook failed") from None
        if addresses is None:
            addresses = ServerAddresses(
                ipv4=f"203.0.113.{10 + server_id % 240}",
                ipv6_network=f"2001:db8:0:{server_id:x}::/64",
            )
        server = {
            "id": server_id,
            "name": resolved["name"],
            "status": "initializing",
            "created": self._timestamp(),
            "labels": labels,
            "server_type": resolved["server_type"]["name"],
            "location": resolved["location"]["name"],
            "image_id": resolved["image"]["id"],
            "user_data": resolved["user_data"],
            "ssh_key_ids": [key["id"] for key in resolved["ssh_keys"]],
            "ipv4": addresses.ipv4 if resolved["enable_ipv4"] else None,
            "ipv4_id": self._next_id(),
            "ipv6": addresses.ipv6_network if resolved["enable_ipv6"] else None,
            "ipv6_id": self._next_id(),
            "firewalls": [],
        }
        self.servers[server_id] = server
        for firewall_id in resolved["firewall_ids"]:
            self.firewalls[firewall_id]["applied_to"].append(
                {"type": "server", "server": {"id": server_id}}
            )
            server["firewalls"].append({"id": firewall_id, "status": "applied"})

        created_ok: list[bool] = []

        def created(ok: bool) -> None:
            created_ok.append(ok)
            if ok and server["status"] == "initializing":
                server["status"] = "off"

        def started(ok: bool) -> None:
            if ok and all(created_ok) and server_id in self.servers:
                server["status"] = "running"

        action = self._new_action("create_server", [("server", server_id)], created)
        next_actions = []
        if body.get("start_after_create", True):
            next_actions.append(self._new_action("start_server", [("server", server_id)], started))
        return {
            "server": self._render_server(server),
            "action": action,
            "next_actions": next_actions,
            "root_password": None if resolved["ssh_keys"] else secrets.token_urlsafe(15),
        }

    def _op_delete_server(self, request: Request, body: Any, id: int) -> tuple[int, Any]:
        server = self._get(self.servers, id, "server")
        # "This immediately removes the Server from your account"; attached
        # firewalls are detached while the server is deleted.
        del self.servers[id]
        for firewall in self.firewalls.values():
            firewall["applied_to"] = [
                entry
                for entry in firewall["applied_to"]
                if not (entry["type"] == "server" and entry["server"]["id"] == id)
            ]
        if self._delete_hook is not None:
            try:
                self._delete_hook(id, server["name"])
            except Exception as exc:  # report any hook failure to the test
                self.hook_errors.append(
                    f"on_server_delete hook failed for {server['name']}: {exc!r}"
                )
        return 200, {"action": self._new_action("delete_server", [("server", id)])}


@contextmanager
def running_fake(**kwargs: Any) -> Iterator[FakeHetznerCloud]:
    """Run a FakeHetznerCloud for the duration of a with-block; check it on a clean exit."""
    fake = FakeHetznerCloud(**kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()
    fake.check()


__all__ = [
    "ERROR_STATUS",
    "ROUTES",
    "SPEC_PATH",
    "USER_DATA_LIMIT",
    "ApiError",
    "FakeHetznerCloud",
    "LoadedSpec",
    "RecordedRequest",
    "ServerAddresses",
    "ServerCreateRequest",
    "label_problems",
    "load_spec",
    "md5_fingerprint",
    "parse_label_selector",
    "running_fake",
]
