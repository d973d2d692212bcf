"""Which GPUs ``CUDA_VISIBLE_DEVICES`` shows to CUDA, and in what order, read without CUDA.

The rules are torch's own (``torch.cuda._parse_visible_devices`` and
``_transform_uuid_to_ordinals``, which torch's ``device_count()`` applies before CUDA starts), so
that the devices counted here are the devices torch counts and ``cuda:N`` here is torch's ``cuda:N``:

- unset: every GPU; set but empty: none;
- a comma-separated list of integers (C ``strtoul``: leading whitespace and a sign are read, the
  digits that follow make the number, anything after them is ignored: ``1gpu`` is 1), of
  ``GPU-`` UUID prefixes, or of ``MIG-`` UUID prefixes, the kind decided by the first entry;
- the first entry that is not valid (negative, past the last GPU, not of the list's kind, a prefix
  that matches no device or more than one) ends the list; a device named twice empties it.

One difference from torch: an entry that is only a sign ("-", "+x") ends the list here, where
torch's parser raises ValueError; CUDA's ``strtoul`` reads no number there either.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Visible", "visible"]

#: What C's strtoul reads at the start of an entry: optional whitespace and sign, then ASCII digits.
_NUMBER = re.compile(r"\s*([+-]?)([0-9]+)")


@dataclass(frozen=True)
class Visible:
    """The devices CUDA shows, as indices into the driver's lists, in CUDA's order (``cuda:0`` first)."""

    #: "all" (the variable is unset), "index" (integers), "uuid" (GPU- prefixes), "mig" (MIG- prefixes).
    kind: Literal["all", "index", "uuid", "mig"]
    #: Indices into the GPUs ("all", "index", "uuid") or into the MIG instances ("mig").
    ordinals: tuple[int, ...]


def visible(value: str | None, gpu_uuids: Sequence[str], mig_uuids: Sequence[str] = ()) -> Visible:
    """What ``CUDA_VISIBLE_DEVICES=value`` shows of these GPUs and MIG instances (UUIDs in the driver's order)."""
    if value is None:
        return Visible("all", tuple(range(len(gpu_uuids))))
    if value.startswith("GPU-"):
        return Visible("uuid", _by_uuid(_prefixed(value, "GPU-"), gpu_uuids))
    if value.startswith("MIG-"):
        return Visible("mig", _by_uuid(_prefixed(value, "MIG-"), mig_uuids))
    return Visible("index", _by_index(value, len(gpu_uuids)))


def _strtoul(entry: str) -> int:
    """The number C's strtoul reads at the start of ``entry``; -1 where it reads none."""
    found = _NUMBER.match(entry)
    if found is None:
        return -1
    sign, digits = found.groups()
    return -int(digits) if sign == "-" else int(digits)


def _by_index(value: str, count: int) -> tuple[int, ...]:
    ordinals: list[int] = []
    for entry in value.split(","):
        number = _strtoul(entry)
        if number in ordinals:
            return ()
        if number < 0:
            break
        ordinals.append(number)
    # torch checks for repeats over the whole list first, then cuts it at the first GPU that is not there.
    past = next((i for i, number in enumerate(ordinals) if number >= count), len(ordinals))
    return tuple(ordinals[:past])


def _prefixed(value: str, prefix: str) -> list[str]:
    entries: list[str] = []
    for entry in value.split(","):
        if entry in entries:
            return []
        if not entry.startswith(prefix):
            break
        entries.append(entry)
    return entries


def _by_uuid(prefixes: list[str], uuids: Sequence[str]) -> tuple[int, ...]:
    ordinals: list[int] = []
    for prefix in prefixes:
        matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(prefix)]
        if len(matches) != 1:
            break
        if matches[0] in ordinals:
            return ()
        ordinals.append(matches[0])
    return tuple(ordinals)
