"""`inv diagnose`: every troubleshooting check on each server in one SSH round trip.

probe.py runs on the server and reports raw facts as JSON. checks/ judges
them here, as pure functions from facts to CheckResult. run.py drives several
servers in parallel, and report.py renders the outcome for people or monitoring.
"""

from .checks import NAMES, run_checks
from .result import CheckResult, Expectations, Inputs, LocalFacts
from .run import Environment, HostReport, diagnose, exit_code

__all__ = [
    "NAMES",
    "CheckResult",
    "Environment",
    "Expectations",
    "HostReport",
    "Inputs",
    "LocalFacts",
    "diagnose",
    "exit_code",
    "run_checks",
]
