"""zot-hetzner: deploy and operate a private zot OCI registry on Hetzner Cloud."""

__version__ = "0.1.0"
