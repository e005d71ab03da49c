"""Loopback stand-ins for the internet services a deployment uses, for offline sandbox hosts."""

from .apt_proxy import AptProxy
from .caddy_releases import CaddyFault, CaddyReleaseServer
from .process import StandinError, StandinProcess
from .registry import LocalRegistry
from .s3 import S3Server
from .zot_image import ZotStandinImage, ZotStandinOnHost

__all__ = [
    "AptProxy",
    "CaddyFault",
    "CaddyReleaseServer",
    "LocalRegistry",
    "S3Server",
    "StandinError",
    "StandinProcess",
    "ZotStandinImage",
    "ZotStandinOnHost",
]
