"""The conformance suite: the checks every mixprec backend, ours and third parties', must pass.

Passing it is the promise a backend makes to users: for every precision it offers, its objects do
what the precision's contract says and what Lightning's ``Precision`` interface promises, method by
method (:mod:`mixprec.testing._contract` lists every promise with its check). It runs against one
installed backend, on one device, for every precision the backend offers there, and is used in two
forms that run the very same cases:

- ``mixprec check NAME [--device D] [--precision P] [--json]``: a readable report; exit status 1 if a
  check failed, 0 otherwise (also when every check was skipped, which the report says plainly).
- From the backend's own pytest run, by subclassing :class:`ConformanceTests`::

      from mixprec.testing import ConformanceTests

      class TestConformance(ConformanceTests):
          backend = "mine"

Every offered precision has a contract (:class:`Contract`): the core's for the standard precisions
(:data:`STANDARD_CONTRACTS`), the backend's own for any other
(``Backend(..., contracts={"my-precision": Contract(...)})``). A precision without one fails
``contract_declared``, and nothing else is run for it: nothing is passed unverified.

A check is skipped, with the reason, never passed, when the device is absent (the backend's policy
counts no such device: ``device_count()``; for the core's every-device backend, torch's device
module), when the backend's policy says the precision cannot run there, or when the backend
declares the check's optional capability unsupported: ``Backend(..., unsupported={"fused_optimizers":
"why"})`` for all its precisions, or ``Contract(..., unsupported=...)`` for one, with the names in
:data:`CAPABILITIES`. A capability neither declares unsupported is required.

:data:`CHECKS` lists the checks, each named after the behaviour it tests. Library use:
``mixprec.testing.run("cpu")`` returns a :class:`Report`; :class:`Suite` gives the cases before
running them. Importing this package imports torch and lightning.
"""

from __future__ import annotations

from mixprec._contract import STANDARD_CONTRACTS, Contract
from mixprec.testing._checks import CHECKS, Check, CheckFailed, CheckSkipped, Subject
from mixprec.testing._contract import CAPABILITIES
from mixprec.testing._pytest import ConformanceTests
from mixprec.testing._suite import Case, Outcome, Report, Result, Suite, run

__all__ = [
    "CAPABILITIES",
    "CHECKS",
    "STANDARD_CONTRACTS",
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
