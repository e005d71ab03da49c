"""Seed data for the fake Hetzner Cloud API: locations, server types, images.

The names and architectures follow Hetzner's public catalogue (2026); ids,
sizes, prices and dates are made up for the tests and are not Hetzner's
price list. Every object has the shape that the OpenAPI document requires,
which the fake checks on each reply.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

EU_LOCATIONS = ("fsn1", "nbg1", "hel1")
ALL_LOCATIONS = ("fsn1", "nbg1", "hel1", "ash", "hil", "sin")

_LOCATIONS: tuple[tuple[int, str, str, str, str, float, float, str, str], ...] = (
    # id, name, description, country, city, latitude, longitude, network zone, datacenter
    (1, "fsn1", "Falkenstein DC Park 1", "DE", "Falkenstein", 50.47612, 12.370071, "eu-central", "fsn1-dc14"),
    (2, "nbg1", "Nuremberg DC Park 1", "DE", "Nuremberg", 49.452102, 11.076665, "eu-central", "nbg1-dc3"),
    (3, "hel1", "Helsinki DC Park 1", "FI", "Helsinki", 60.169855, 24.938379, "eu-central", "hel1-dc2"),
    (4, "ash", "Ashburn, VA", "US", "Ashburn, VA", 39.045821, -77.487073, "us-east", "ash-dc1"),
    (5, "hil", "Hillsboro, OR", "US", "Hillsboro, OR", 45.54222, -122.951924, "us-west", "hil-dc1"),
    (6, "sin", "Singapore", "SG", "Singapore", 1.283333, 103.833333, "ap-southeast", "sin-dc1"),
)  # fmt: skip

# name, architecture, cpu_type, cores, memory GB, disk GB, locations
_SERVER_TYPES: tuple[tuple[str, str, str, int, float, int, tuple[str, ...]], ...] = (
    ("cx22", "x86", "shared", 2, 4.0, 40, EU_LOCATIONS),
    ("cx23", "x86", "shared", 2, 4.0, 40, EU_LOCATIONS),
    ("cx33", "x86", "shared", 4, 8.0, 80, EU_LOCATIONS),
    ("cx43", "x86", "shared", 8, 16.0, 160, EU_LOCATIONS),
    ("cpx22", "x86", "shared", 2, 4.0, 80, ("fsn1", "nbg1", "hel1", "sin")),
    ("cax11", "arm", "shared", 2, 4.0, 40, EU_LOCATIONS),
    ("cax21", "arm", "shared", 4, 8.0, 80, EU_LOCATIONS),
    ("ccx13", "x86", "dedicated", 2, 8.0, 80, ALL_LOCATIONS),
)

# Server types deprecated in every location they list; still orderable until
# unavailable_after, which lies DEPRECATED_DAYS_LEFT days after "now".
DEPRECATED_SERVER_TYPES = ("cx22",)
DEPRECATED_DAYS_LEFT = 30

# name, description, os flavor, os version
_IMAGES: tuple[tuple[str, str, str, str], ...] = (
    ("debian-12", "Debian 12", "debian", "12"),
    ("debian-13", "Debian 13", "debian", "13"),
    ("ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04"),
)


def timestamp(moment: dt.datetime) -> str:
    """Format MOMENT as RFC 3339 in UTC, the way the API writes times."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def locations() -> list[dict[str, Any]]:
    """Return the location objects (schema `location`)."""
    return [
        {
            "id": location_id,
            "name": name,
            "description": description,
            "country": country,
            "city": city,
            "latitude": latitude,
            "longitude": longitude,
            "network_zone": zone,
        }
        for location_id, name, description, country, city, latitude, longitude, zone, _ in _LOCATIONS
    ]


def datacenter_names() -> dict[str, str]:
    """Map each location name to the data center a new server lands in."""
    return {row[1]: row[8] for row in _LOCATIONS}


def _price(location: str, monthly_net: float) -> dict[str, Any]:
    def amount(net: float) -> dict[str, str]:
        return {"net": f"{net:.4f}", "gross": f"{net * 1.19:.4f}"}

    return {
        "location": location,
        "included_traffic": 21990232555520,
        "price_hourly": amount(monthly_net / 730),
        "price_monthly": amount(monthly_net),
        "price_per_tb_traffic": amount(1.0),
    }


def server_types(now: dt.datetime) -> list[dict[str, Any]]:
    """Return the server type objects (schema `server_type`) as of NOW."""
    location_ids = {row[1]: row[0] for row in _LOCATIONS}
    deprecation = {
        "announced": timestamp(now - dt.timedelta(days=90)),
        "unavailable_after": timestamp(now + dt.timedelta(days=DEPRECATED_DAYS_LEFT)),
    }
    result = []
    for index, (name, arch, cpu_type, cores, memory, disk, where) in enumerate(_SERVER_TYPES):
        deprecated = name in DEPRECATED_SERVER_TYPES
        result.append(
            {
                "id": 100 + index,
                "name": name,
                "description": name.upper(),
                "category": "Dedicated vCPU" if cpu_type == "dedicated" else "Shared vCPU",
                "architecture": arch,
                "cpu_type": cpu_type,
                "cores": cores,
                "memory": memory,
                "disk": disk,
                "storage_type": "local",
                "deprecated": deprecated,
                "deprecation": dict(deprecation) if deprecated else None,
                # "available" and "recommended" per location replace the data
                # centers' server type lists (hcloud-python 2.18.0, after the API
                # changelog entry "2026-04-01 datacenter deprecations"). The
                # OpenAPI document in this directory predates them; it allows
                # extra properties, so they pass its checks.
                "locations": [
                    {
                        "id": location_ids[location],
                        "name": location,
                        "deprecation": dict(deprecation) if deprecated else None,
                        "available": True,
                        "recommended": not deprecated,
                    }
                    for location in where
                ],
                "prices": [_price(location, 2.0 * cores + memory) for location in where],
            }
        )
    return result


def images(now: dt.datetime) -> list[dict[str, Any]]:
    """Return the system image objects (schema `image`), one per architecture."""
    created = timestamp(now - dt.timedelta(days=200))
    result = []
    image_id = 1000
    for name, description, flavor, version in _IMAGES:
        for arch in ("x86", "arm"):
            image_id += 1
            result.append(
                {
                    "id": image_id,
                    "name": name,
                    "description": description,
                    "type": "system",
                    "status": "available",
                    "architecture": arch,
                    "os_flavor": flavor,
                    "os_version": version,
                    "rapid_deploy": True,
                    "disk_size": 5,
                    "image_size": None,
                    "created": created,
                    "created_from": None,
                    "bound_to": None,
                    "deleted": None,
                    "deprecated": None,
                    "labels": {},
                    "protection": {"delete": False},
                }
            )
    return result
