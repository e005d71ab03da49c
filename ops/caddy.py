"""Caddy releases: resolving "latest" to a version number."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from . import validate
from .config import Settings
from .errors import OpsError

TIMEOUT_SECONDS = 15


def resolve_version(settings: Settings, timeout: float = TIMEOUT_SECONDS) -> str:
    """Return the configured Caddy version, asking the releases API when it is "latest".

    Release assets carry the version in their names, so the bootstrap needs a
    number, not the word "latest".
    """
    if settings.caddy.version != "latest":
        return settings.caddy.version
    url = settings.caddy.releases_api
    # The settings model admits only http and https URLs here.
    request = urllib.request.Request(url, headers={"Accept": "application/vnd.github+json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            tag = json.load(response)["tag_name"]
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise OpsError(
            f"could not resolve the latest Caddy release from {url} ({error}); "
            "set deployment.caddy.version to a release such as 2.10.2"
        ) from None
    except (KeyError, ValueError, TypeError):
        raise OpsError(
            f"{url} returned no tag_name; set deployment.caddy.version explicitly"
        ) from None
    try:
        return validate.caddy_version(str(tag))
    except ValueError:
        raise OpsError(f"{url} returned the tag {tag!r}, which is not a version number") from None
