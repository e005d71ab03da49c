"""Checks of the S3 credentials and the bucket behind zot."""

from __future__ import annotations

import stat

from ... import layout
from ..result import CheckResult, Inputs, fail, ok, skip, warn
from .common import SET_S3_CREDENTIALS, probe_error

# S3 error codes: what each means for this deployment, the fix, and where it runs.
_S3_ERRORS = {
    "InvalidAccessKeyId": (
        "the endpoint does not know the access key id: it was deleted, mistyped or "
        "belongs to another location",
        SET_S3_CREDENTIALS,
        "local",
    ),
    "SignatureDoesNotMatch": (
        "the secret key does not belong to the access key id",
        SET_S3_CREDENTIALS,
        "local",
    ),
    "AccessDenied": (
        "the key may not list this bucket: the bucket belongs to another project or a "
        "bucket policy denies the key",
        SET_S3_CREDENTIALS,
        "local",
    ),
    "NoSuchBucket": (
        "no bucket of that name exists at this endpoint",
        "create the bucket in the Hetzner Console (Object Storage) in the configured "
        f"location, or switch to an existing one: {SET_S3_CREDENTIALS} --bucket NAME",
        "local",
    ),
    "PermanentRedirect": (
        "the bucket lives in another location than the endpoint names",
        f"{SET_S3_CREDENTIALS} --location LOCATION (fsn1, nbg1 or hel1: the bucket's)",
        "local",
    ),
    "AuthorizationHeaderMalformed": (
        "the signing region does not match the endpoint's",
        f"{SET_S3_CREDENTIALS} --location LOCATION (the one the endpoint names)",
        "local",
    ),
    "RequestTimeTooSkewed": (
        "the server's clock is more than 15 minutes off, so S3 rejects its signatures",
        "timedatectl set-ntp true",
        "server",
    ),
}


def s3_credentials(inputs: Inputs) -> CheckResult:
    facts = inputs.facts.get("credentials") or {}
    path = layout.ZOT_CREDENTIALS
    if not facts.get("exists"):
        return fail(
            f"{path} is missing",
            "zot.service does not start without S3 credentials",
            SET_S3_CREDENTIALS,
            "local",
        )

    if facts.get("error"):
        return fail(f"{path} could not be read: {facts['error']}", "", f"ls -l {path}", "server")

    missing = [
        name
        for name, present in (
            ("AWS_ACCESS_KEY_ID", facts.get("access_key_present")),
            ("AWS_SECRET_ACCESS_KEY", facts.get("secret_key_present")),
        )
        if not present
    ]
    if missing:
        return fail(
            f"{path} lacks {' and '.join(missing)}",
            "zot cannot sign requests to Object Storage",
            SET_S3_CREDENTIALS,
            "local",
        )

    mode = int(facts.get("mode", "0"), 8)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return fail(
            f"{path} has mode {facts.get('mode')}: other local users can read the S3 keys",
            "the file was written without a restrictive mode",
            f"chmod 0600 {path}",
            "server",
        )

    if facts.get("uid") != 0:
        return warn(
            f"{path} is owned by uid {facts.get('uid')}, not root",
            "that user can read and replace the S3 keys",
            f"chown root:root {path}",
            "server",
        )
    return ok(f"{path}: both keys set (values not shown), mode {facts.get('mode')}, owner root")


def s3_bucket(inputs: Inputs) -> CheckResult:
    facts = inputs.facts.get("s3") or {}
    driver = ((inputs.facts.get("zot_config") or {}).get("storage") or {}).get("driver") or {}
    bucket = driver.get("bucket") or "?"
    if probe_error(facts):
        return fail(f"S3 request not made: {probe_error(facts)}", "", "", "")

    if not facts.get("attempted"):
        return skip(f"S3 request not made: {facts.get('reason')}")

    host = facts.get("endpoint_host")
    if "status" not in facts:
        return fail(
            f"request to {host} failed: {facts.get('error')}",
            "the server cannot reach the Object Storage endpoint: a wrong regionendpoint, "
            "DNS on the server, or outbound traffic blocked",
            f"getent hosts {host.split(':')[0] if host else 'ENDPOINT'}",
            "server",
        )

    status = facts["status"]
    code = facts.get("error_code")
    evidence = f"listing bucket {bucket} at {host}: HTTP {status}" + (f" {code}" if code else "")
    if status == 200:
        return ok(f"{evidence} in {facts.get('elapsed_ms')} ms, with the server's credentials")

    if code in _S3_ERRORS:
        cause, fix, where = _S3_ERRORS[code]
        return fail(evidence, cause, fix, where)

    if status >= 500:
        return warn(
            evidence,
            "Object Storage answered with a server error; it may be a passing outage",
            "",
            "",
        )
    return fail(
        evidence,
        "Object Storage rejected the request",
        SET_S3_CREDENTIALS,
        "local",
    )
