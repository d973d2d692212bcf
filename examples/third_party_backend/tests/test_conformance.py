"""mixprec's conformance suite, run against this backend from its own pytest run."""

from __future__ import annotations

from mixprec.testing import ConformanceTests


class TestConformance(ConformanceTests):
    backend = "sr"
