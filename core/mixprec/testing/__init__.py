"""The conformance suite: the checks every mixprec backend, ours and third parties', must pass.

Passing it is the promise a backend makes to users: for every precision it offers, its objects
behave like the reference (Lightning's own plugins on the device mixprec resolved). It runs against
one installed backend, on one device, for every precision the backend offers there, and is used
in two forms that run the very same cases:

- ``mixprec check NAME [--device D] [--precision P] [--json]``: a readable report; exit status 1 if a
  check failed, 0 otherwise (also when every check was skipped, which the report says plainly).
- From the backend's own pytest run, by subclassing :class:`ConformanceTests`::

      from mixprec.testing import ConformanceTests

      class TestConformance(ConformanceTests):
          backend = "mine"

A check is skipped, with the reason, never passed, when the device is absent, when the backend's
policy says the precision cannot run there, or when the backend declares the check's optional
capability unsupported: ``Backend(..., unsupported={"fused_optimizers": "why"})``, with the names
in :data:`CAPABILITIES`. A capability the backend does not declare unsupported is required.

What a precision promises is fixed by its name (:data:`CONTRACTS`), the same for every backend;
:data:`CHECKS` lists the checks, each named after the behaviour it tests.

Library use: ``mixprec.testing.run("cpu")`` returns a :class:`Report`; :class:`Suite` gives the
cases before running them. Importing this package imports torch and lightning.
"""

from __future__ import annotations

from mixprec.testing._checks import CHECKS, Check, CheckFailed, CheckSkipped, Subject
from mixprec.testing._contract import CAPABILITIES, CONTRACTS, SCALER_OPTIONS, TRAINING_RTOL, Contract
from mixprec.testing._pytest import ConformanceTests
from mixprec.testing._suite import Case, Outcome, Report, Result, Suite, run

__all__ = [
    "CAPABILITIES",
    "CHECKS",
    "CONTRACTS",
    "SCALER_OPTIONS",
    "TRAINING_RTOL",
    "Case",
    "Check",
    "CheckFailed",
    "CheckSkipped",
    "ConformanceTests",
    "Contract",
    "Outcome",
    "Report",
    "Result",
    "Subject",
    "Suite",
    "run",
]
