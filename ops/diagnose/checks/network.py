"""Checks of DNS, TLS, the HTTPS front and the firewalls."""

from __future__ import annotations

from ... import layout
from .. import parsers
from ..result import CheckResult, Inputs, fail, ok, skip, warn
from .common import RERUN_BOOTSTRAP, duration, logs, probe_error, restart, rewrite

# Caddy renews an ACME certificate when a third of its lifetime is left
# (certmagic's DefaultRenewalWindowRatio = 1/3, so 30 of Let's Encrypt's 90
# days), so fewer than 14 days left means renewals have been failing.
CERT_WARN_DAYS = 14
CERT_FAIL_DAYS = 3
WEB_PORTS = (80, 443)


def _record_type(address: str) -> str:
    return "AAAA" if parsers.family(address) == 6 else "A"


def _public(addresses) -> set[str]:
    return {address for address in addresses if not parsers.is_loopback(address)}


def dns(inputs: Inputs) -> CheckResult:
    domain = inputs.expect.domain
    facts = inputs.facts
    on_server = parsers.server_addresses((facts.get("addresses") or {}).get("addresses") or [])
    recorded = _public(inputs.expect.recorded_addresses)
    this_host = on_server | recorded
    deployment = this_host | _public(inputs.expect.deployment_addresses)

    local = inputs.local.resolution or {}
    resolved = set(local.get("ipv4") or []) | set(local.get("ipv6") or [])
    source = "from here"
    if not resolved:
        server_side = _public((facts.get("resolution") or {}).get("addresses") or [])
        if server_side:
            resolved, source = server_side, "from the server"

    ipv4 = sorted(a for a in this_host if parsers.family(a) == 4)
    ipv6 = sorted(a for a in this_host if parsers.family(a) == 6)
    records = []
    if ipv4:
        records.append(f"A {domain} -> {ipv4[0]}")
    if ipv6:
        records.append(f"AAAA {domain} -> {ipv6[0]}")
    target = ", ".join(records)

    if not resolved:
        evidence = f"{domain} does not resolve ({local.get('error') or 'no A or AAAA record'})"
        cause = "without an A/AAAA record no client finds the registry"
        fix = f"create the records {target}" if target else "create an A record for the domain"
        if inputs.expect.tls == "acme":
            return fail(
                evidence,
                cause + " and Let's Encrypt cannot validate the domain",
                fix,
                "dns",
            )
        return warn(evidence, cause, fix, "dns")

    if not this_host:
        return warn(
            f"{domain} resolves {source} to {', '.join(sorted(resolved))}; the server has no "
            "global address to compare with",
            "the server's public address is not on its interfaces and none is recorded",
        )

    foreign = sorted(resolved - deployment)
    if foreign:
        wrong = ", ".join(f"{_record_type(a)} {a}" for a in foreign)
        return fail(
            f"{domain} resolves {source} to {wrong}, which is not this server "
            f"({', '.join(sorted(this_host))})",
            "the record points at another machine, so clients and Let's Encrypt "
            "(which prefers IPv6 when an AAAA record exists) reach the wrong host",
            f"set the records {target} and remove the others"
            if target
            else "point the records at this server",
            "dns",
        )

    evidence = f"{domain} resolves {source} to {', '.join(sorted(resolved))}"
    if not resolved & this_host:
        return warn(
            evidence + ", all other servers of this deployment",
            "no record points at this server, so it receives no traffic",
            f"add the records {target}",
            "dns",
        )

    stale = sorted(recorded - on_server) if on_server else []
    if stale:
        return warn(
            f"{evidence}; recorded address {', '.join(stale)} is not on the server's interfaces",
            "the local server record is out of date",
        )
    return ok(evidence + " (this server)")


def certificate(inputs: Inputs) -> CheckResult:
    reply = inputs.facts.get("caddy_https") or {}
    domain = inputs.expect.domain
    if reply.get("refused"):
        return fail(
            "nothing listens on port 443 on the server",
            "Caddy is not running or did not bind 443",
            restart("caddy"),
            "local",
        )

    der = reply.get("certificate_der")
    if not der:
        return fail(
            f"TLS handshake for {domain} failed: {reply.get('error') or probe_error(reply)}",
            "Caddy has no certificate for the domain yet; ACME validation fails when DNS "
            "points elsewhere or port 80 is closed",
            logs("caddy"),
            "local",
        )

    try:
        cert = parsers.parse_certificate(der)
    except ValueError as error:
        return fail(f"the certificate could not be parsed: {error}", "", logs("caddy"), "local")

    now = inputs.facts.get("started_at") or 0
    left = cert.not_after - now
    days = left / 86400
    summary = f"issued by {cert.issuer} for {', '.join(cert.dns_names) or cert.subject_cn}"
    if not cert.covers(domain):
        return fail(
            f"certificate {summary} does not cover {domain}",
            "Caddy serves a certificate for another name: the Caddyfile names another site",
            rewrite(layout.CADDYFILE),
            "local",
        )

    if left <= 0:
        return fail(
            f"certificate {summary} expired {duration(-left)} ago",
            "Caddy could not renew it; its log shows the failing ACME step",
            f"{logs('caddy')}; then {restart('caddy')}",
            "local",
        )

    expires = f"expires in {duration(left)}"
    verification = inputs.facts.get("caddy_tls_verify") or {}
    if inputs.expect.tls == "internal":
        # Caddy's internal issuer signs 12-hour leaf certificates by default
        # (defaultInternalCertLifetime in caddy's modules/caddypki/ca.go) and renews them early.
        return ok(f"certificate {summary}, {expires} (Caddy's internal CA, untrusted by design)")

    if days < CERT_FAIL_DAYS:
        return fail(
            f"certificate {summary} {expires}",
            "renewal has failed for weeks; ACME validation does not reach this server",
            logs("caddy"),
            "local",
        )

    if verification.get("verified") is False:
        if "staging" in cert.issuer.lower():
            return warn(
                f"certificate {summary} is from Let's Encrypt's staging CA, {expires}",
                "deployment.acme_staging is true; clients do not trust staging certificates",
                f"set deployment.acme_staging: false, then {rewrite(layout.CADDYFILE)}",
                "local",
            )
        return fail(
            f"certificate {summary} is not trusted: {verification.get('error')}",
            "clients reject the certificate",
            logs("caddy"),
            "local",
        )

    if days < CERT_WARN_DAYS:
        return warn(
            f"certificate {summary} {expires}",
            "Caddy renews at a third of the lifetime; renewal attempts are failing",
            logs("caddy"),
            "local",
        )
    return ok(f"certificate {summary}, {expires}, trusted")


def https_on_server(inputs: Inputs) -> CheckResult:
    reply = inputs.facts.get("caddy_https") or {}
    domain = inputs.expect.domain
    if "status" not in reply:
        return fail(
            f"GET https://{domain}/v2/ via 127.0.0.1 failed: "
            f"{reply.get('error') or probe_error(reply)}",
            "Caddy does not answer HTTPS for the domain",
            logs("caddy"),
            "local",
        )

    status = reply["status"]
    challenge = reply.get("www_authenticate") or ""
    if status == 401 and challenge.lower().startswith("basic"):
        return ok(f"GET https://{domain}/v2/ via 127.0.0.1: 401, {challenge}")

    if status in (502, 503, 504):
        return fail(
            f"GET https://{domain}/v2/ via 127.0.0.1: {status}",
            f"Caddy cannot reach zot at {layout.ZOT_ADDRESS}:{layout.ZOT_PORT}",
            restart("zot"),
            "local",
        )

    if status == 200:
        return fail(
            f"GET https://{domain}/v2/ via 127.0.0.1: 200 without credentials",
            "the registry is open to anyone: zot's authentication is off or Caddy serves "
            "something else",
            rewrite(layout.CADDYFILE),
            "local",
        )
    return fail(
        f"GET https://{domain}/v2/ via 127.0.0.1: {status}",
        "Caddy does not proxy /v2/ to zot as the toolkit's Caddyfile does",
        rewrite(layout.CADDYFILE),
        "local",
    )


def http_port(inputs: Inputs) -> CheckResult:
    reply = inputs.facts.get("caddy_http") or {}
    domain = inputs.expect.domain
    if "status" not in reply:
        return fail(
            f"GET http://{domain}/v2/ via 127.0.0.1 failed: "
            f"{reply.get('error') or probe_error(reply)}",
            "Caddy does not serve port 80, which Let's Encrypt's HTTP challenge needs",
            restart("caddy"),
            "local",
        )

    location = reply.get("location") or ""
    if 300 <= reply["status"] < 400 and location.startswith("https://"):
        return ok(f"port 80 redirects to {location}")
    return warn(
        f"GET http://{domain}/v2/ via 127.0.0.1: {reply['status']}, no redirect to HTTPS",
        "plain HTTP requests are not sent on to HTTPS",
        rewrite(layout.CADDYFILE),
        "local",
    )


def https_from_here(inputs: Inputs) -> CheckResult:
    reply = inputs.local.https
    domain = inputs.expect.domain
    if reply is None:
        error = (inputs.local.resolution or {}).get("error") or "no address"
        return skip(f"{domain} does not resolve from here ({error})")

    address = reply.get("address", "?")
    if "status" not in reply:
        cause = (
            "the server answers on its own loopback but not from here, although ufw and the "
            "Cloud Firewall admit 443: check the network between here and the server"
        )
        if reply.get("verify_error"):
            cause = "this machine does not trust the certificate the server presents"
        return fail(
            f"GET https://{domain}/v2/ from here ({address}) failed: "
            f"{reply.get('verify_error') or reply.get('error')}",
            cause,
            f"curl -v https://{domain}/v2/",
            "local",
        )

    status = reply["status"]
    challenge = reply.get("www_authenticate") or ""
    if status == 401 and challenge.lower().startswith("basic"):
        return ok(f"GET https://{domain}/v2/ from here ({address}): 401, {challenge}")
    return fail(
        f"GET https://{domain}/v2/ from here ({address}): {status}",
        "another machine answers for the domain, or a proxy sits in between",
        "dig +short " + domain,
        "local",
    )


def ufw(inputs: Inputs) -> CheckResult:
    facts = inputs.facts.get("ufw") or {}
    if facts.get("rc") is None:
        return warn(
            f"ufw status unavailable: {facts.get('error') or probe_error(facts)}",
            "ufw is not installed, so only the Cloud Firewall protects the server",
            "apt-get install ufw",
            "server",
        )

    if facts.get("rc") != 0:
        return warn(
            f"ufw status failed: {facts.get('stderr') or 'exit status ' + str(facts.get('rc'))}",
            "the probe may lack root rights",
        )

    status = parsers.parse_ufw_status(facts.get("output") or "")
    if not status.active:
        return warn(
            "ufw is inactive",
            "nothing filters incoming traffic on the server itself",
            f"{RERUN_BOOTSTRAP} (it allows SSH from the allowed networks, 80 and 443, then "
            "enables ufw; it also restarts zot and Caddy)",
            "server",
        )

    addresses = parsers.server_addresses(
        (inputs.facts.get("addresses") or {}).get("addresses") or []
    )

    families = [False] + [True] * any(parsers.family(a) == 6 for a in addresses)
    closed, restricted = [], []
    for port in WEB_PORTS:
        for v6 in families:
            access, sources = parsers.ufw_port_access(status, port, "tcp", v6)
            label = f"{port}/tcp{' (v6)' if v6 else ''}"
            if access == "closed":
                closed.append((port, label))
            elif access == "restricted":
                restricted.append(f"{label} only from {', '.join(sources)}")

    if closed:
        ports = sorted({port for port, _ in closed})
        cause = "clients cannot reach Caddy"
        if 80 in ports:
            cause += ", and Let's Encrypt's HTTP challenge needs port 80 to validate the domain"
        return fail(
            f"ufw blocks {', '.join(label for _, label in closed)}",
            cause,
            " && ".join(f"ufw allow {port}/tcp" for port in ports),
            "server",
        )

    if restricted:
        return warn(
            f"ufw admits {'; '.join(restricted)}",
            "clients outside those networks and Let's Encrypt cannot reach the registry",
            " && ".join(f"ufw allow {port}/tcp" for port in WEB_PORTS),
            "server",
        )
    return ok(f"ufw active; 80/tcp and 443/tcp open (default incoming: {status.default_incoming})")


def cloud_firewall(inputs: Inputs) -> CheckResult:
    facts = inputs.local.cloud_firewall or {}
    if facts.get("skipped"):
        return skip(f"Cloud Firewall not checked: {facts['skipped']}")

    if facts.get("error"):
        return warn(f"Cloud Firewall query failed: {facts['error']}", "", "", "")

    firewalls = facts.get("firewalls") or []
    server = facts.get("server", "the server")
    if not firewalls:
        return ok(f"no Cloud Firewall applied to {server}; Hetzner does not filter its traffic")

    names = ", ".join(firewall["name"] for firewall in firewalls)
    needs_v6 = bool(facts.get("ipv6"))
    missing = []
    for port in WEB_PORTS:
        sources: set[str] = set()
        for firewall in firewalls:
            for rule in firewall.get("rules") or []:
                if _rule_admits(rule, port):
                    sources.update(rule.get("source_ips") or [])
        if "0.0.0.0/0" not in sources:
            missing.append((port, "0.0.0.0/0"))
        if needs_v6 and "::/0" not in sources:
            missing.append((port, "::/0"))

    if missing:
        first = firewalls[0]["name"]
        ports = sorted({port for port, _ in missing})
        fix = " && ".join(
            f"hcloud firewall add-rule {first} --direction in --protocol tcp --port {port} "
            "--source-ips 0.0.0.0/0 --source-ips ::/0"
            for port in ports
        )
        return fail(
            f"Cloud Firewall {names} drops "
            + ", ".join(f"{port}/tcp from {source}" for port, source in missing),
            "a Hetzner Cloud Firewall drops every inbound packet that no rule allows",
            fix,
            "local",
        )
    return ok(f"Cloud Firewall {names} admits 80/tcp and 443/tcp from anywhere")


def _rule_admits(rule: dict, port: int) -> bool:
    if rule.get("direction") != "in" or rule.get("protocol") != "tcp":
        return False

    spec = str(rule.get("port") or "")
    if spec in ("", "any"):
        return True

    low, _, high = spec.partition("-")
    try:
        return int(low) <= port <= int(high or low)
    except ValueError:
        return False


def _listening_sockets(inputs: Inputs) -> list[tuple[str, int]] | None:
    facts = inputs.facts.get("listening") or {}
    if facts.get("rc") != 0:
        return None
    return parsers.parse_listening(facts.get("output") or "")


def zot_exposure(inputs: Inputs) -> CheckResult:
    sockets = _listening_sockets(inputs)
    container = inputs.facts.get("container") or {}
    exposed = [
        f"{address}:{port}"
        for address, port in sockets or []
        if port == layout.ZOT_PORT and not parsers.is_loopback(address)
    ]
    for binding in container.get("ports") or []:
        # podman leaves HostIp empty when it publishes on every address.
        host_ip = binding.get("host_ip") or "0.0.0.0"  # noqa: S104 - compared, never bound
        if str(binding.get("host_port")) == str(layout.ZOT_PORT) and not parsers.is_loopback(
            host_ip
        ):
            exposed.append(f"{host_ip}:{layout.ZOT_PORT} (podman publish)")

    if exposed:
        return fail(
            f"zot's port is reachable on {', '.join(sorted(set(exposed)))}",
            "zot must listen on loopback only: podman's published ports bypass ufw, so anyone "
            "could reach zot without TLS",
            rewrite(layout.ZOT_UNIT_PATH),
            "local",
        )

    if sockets is None and not container.get("found"):
        return skip("neither the listening sockets nor the container's ports are known")
    return ok(f"zot is published on {layout.ZOT_ADDRESS}:{layout.ZOT_PORT} only")


def web_listeners(inputs: Inputs) -> CheckResult:
    sockets = _listening_sockets(inputs)
    if sockets is None:
        facts = inputs.facts.get("listening") or {}
        return skip(f"ss failed: {facts.get('error') or facts.get('stderr') or probe_error(facts)}")

    public = {port for address, port in sockets if not parsers.is_loopback(address)}
    missing = [str(port) for port in WEB_PORTS if port not in public]
    if missing:
        return fail(
            f"nothing listens on a public address on port {', '.join(missing)}",
            "Caddy is down or bound to loopback only",
            restart("caddy"),
            "local",
        )

    bound = sorted(
        {
            f"{address}:{port}"
            for address, port in sockets
            if port in WEB_PORTS and not parsers.is_loopback(address)
        }
    )
    return ok(f"listening on {', '.join(bound)}")
