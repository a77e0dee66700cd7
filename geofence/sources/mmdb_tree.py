"""The search tree of a MaxMind DB file, walked in address order (build time only).

An MMDB file starts with a binary tree: node ``n`` is ``2 * record_size``
bits holding a left (bit 0) and a right (bit 1) record. A record below
``node_count`` is another node; ``node_count`` itself means "no data"; a
larger value points into the data section (MaxMind DB format 2.0, "Search
Tree Section"). Walking the tree depth-first, left before right, visits the
networks in address order.

:func:`walk` yields *runs*: maximal stretches of adjacent networks that point
to the same data record. A real database splits one record over many networks
(DB-IP City Lite: 14.3 million networks, 0.56 million records), so the caller
decodes each pointer once and handles far fewer ranges than networks.
"""

from __future__ import annotations

from collections.abc import Iterator

from geofence.errors import SourceError

__all__ = ["TreeShape", "ipv4_start", "walk"]


class TreeShape:
    """The numbers a walk needs from the metadata, checked once."""

    __slots__ = ("buffer", "node_count", "pointer_limit", "record_size", "shown")

    def __init__(
        self, buffer: bytes, *, node_count: int, record_size: int, data_size: int, shown: str
    ) -> None:
        """Describe the tree at the start of ``buffer``.

        Args:
            buffer: The whole file (or a mapping of it).
            node_count: Metadata ``node_count``.
            record_size: Metadata ``record_size`` (24, 28 or 32).
            data_size: Length of the data section in bytes.
            shown: File name for messages.

        Raises:
            SourceError: The record size is not one the format defines, or the
                tree does not fit in the file.
        """
        if record_size not in (24, 28, 32):
            raise SourceError(f"{shown}: record_size {record_size} is not 24, 28 or 32")
        if node_count <= 0 or node_count * record_size // 4 > len(buffer):
            raise SourceError(f"{shown}: {node_count} tree nodes do not fit in the file")
        self.buffer = buffer
        self.node_count = node_count
        self.record_size = record_size
        # Pointers are node_count + 16 + offset into the data section.
        self.pointer_limit = node_count + 16 + data_size
        self.shown = shown

    def children(self, node: int) -> tuple[int, int]:
        """The left and right records of ``node``."""
        width = self.record_size // 4
        offset = node * width
        value = int.from_bytes(self.buffer[offset : offset + width], "big")
        return _split(value, self.record_size)


def _split(value: int, record_size: int) -> tuple[int, int]:
    if record_size == 28:
        # The middle byte's high nibble is the top of the left record.
        return ((value >> 32) & 0xFFFFFF) | ((value >> 4) & 0xF000000), value & 0xFFFFFFF
    return value >> record_size, value & ((1 << record_size) - 1)


def ipv4_start(shape: TreeShape, ip_version: int) -> int:
    """The record where IPv4 lookups start: the root, or the node at ``::/96``.

    Returns:
        A node number, ``node_count`` (no IPv4 data) or a data pointer (one
        record for all of IPv4).
    """
    if ip_version == 4:
        return 0
    node = 0
    for _ in range(96):
        if node >= shape.node_count:
            break
        node = shape.children(node)[0]
    return node


def walk(shape: TreeShape, start: int, bits: int, skip: int = -1) -> Iterator[tuple[int, int, int]]:
    """Yield ``(first, last, pointer)`` runs of the subtree at ``start``, in address order.

    Args:
        shape: The tree.
        start: The node (or record) to start at.
        bits: Address width of the subtree: 32 for IPv4, 128 for IPv6.
        skip: A node not to descend into (the IPv4 subtree while walking IPv6:
            writers alias it under several prefixes).

    Raises:
        SourceError: A pointer leads outside the data section, or the tree is
            deeper than the address width (a cycle).
    """
    buffer = shape.buffer
    node_count = shape.node_count
    record_size = shape.record_size
    limit = shape.pointer_limit
    width = record_size // 4
    mask = (1 << record_size) - 1
    from_bytes = int.from_bytes
    stack = [(start, 0, 0)]
    pop = stack.pop
    push = stack.append
    run_first = run_last = run_pointer = -1
    # The hot loop of a build: one pass per node, so the node decoding of
    # _split is written out here rather than called.
    while stack:
        node, depth, value = pop()
        if node >= node_count:
            if node == node_count:
                continue
            last = value | ((1 << (bits - depth)) - 1)
            if node == run_pointer and value == run_last + 1:
                run_last = last
                continue
            if node >= limit:
                raise SourceError(
                    f"{shape.shown}: corrupt search tree: record {node} points past the data "
                    "section"
                )
            if run_pointer >= 0:
                yield run_first, run_last, run_pointer
            run_first, run_last, run_pointer = value, last, node
            continue
        if node == skip:
            continue
        if depth == bits:
            raise SourceError(
                f"{shape.shown}: corrupt search tree: deeper than {bits} bits (a cycle)"
            )
        offset = node * width
        raw = from_bytes(buffer[offset : offset + width], "big")
        if record_size == 28:
            left = ((raw >> 32) & 0xFFFFFF) | ((raw >> 4) & 0xF000000)
            right = raw & 0xFFFFFFF
        else:
            left = raw >> record_size
            right = raw & mask
        depth += 1
        push((right, depth, value | (1 << (bits - depth))))
        push((left, depth, value))
    if run_pointer >= 0:
        yield run_first, run_last, run_pointer
