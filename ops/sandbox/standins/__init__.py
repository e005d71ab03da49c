"""Loopback stand-ins for the internet services a deployment uses, for offline sandbox hosts."""
