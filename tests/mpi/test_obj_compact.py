"""Objects of plain builtins travel in oxmpi's compact format (not pickle);
what arrives must be exactly what pickle would have delivered.

Run under mpiexec at any world size (1 rank talks to itself); every rank
prints "OK test_obj_compact.py rank r".

"Exactly" is checked by `shape`: types (bool is not int, tuple is not
list), float bits, string code points (lone surrogates too), dict order,
and which parts of the object are one object referenced twice, compared
with `pickle.loads(pickle.dumps(obj))`.
"""

import collections
import enum
import math
import os
import pickle
import struct

import numpy as np

from oxmpi import MPI

NAME = os.path.basename(__file__)
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
right, left = (rank + 1) % size, (rank - 1) % size
WHERE = f"[{NAME} rank {rank}/{size}]"
COMPACT_MAGIC = b"\x00OXc"
# OXMPI_COMPACT_OBJECTS=0: every object message is a pickle.
COMPACT = os.environ.get("OXMPI_COMPACT_OBJECTS", "1") != "0"
PLAIN_PREFIX = COMPACT_MAGIC if COMPACT else b"\x80"
MEMOIZED = (str, bytes, tuple, list, dict)


def shape(obj, seen=None):
    """A description of `obj` that two objects share iff they are the same
    value, with the same types, float bits and sharing of sub-objects."""
    if seen is None:
        seen = {}
    t = type(obj)
    if t in MEMOIZED or not isinstance(obj, (int, float, type(None))):
        if id(obj) in seen:
            return ("ref", seen[id(obj)])
        seen[id(obj)] = len(seen)
    if t is float:
        return ("float", struct.pack("<d", obj))
    if t in (list, tuple) or isinstance(obj, (list, tuple)):
        return (t.__name__, tuple(shape(x, seen) for x in obj))
    if isinstance(obj, dict):
        return (t.__name__, tuple((shape(k, seen), shape(v, seen)) for k, v in obj.items()))
    if isinstance(obj, np.ndarray):
        return ("ndarray", obj.dtype.str, obj.shape, obj.tobytes())
    return (t.__name__, repr(obj))


def pickled(obj):
    return pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


class Color(enum.IntEnum):
    RED = 1


class Text(str):
    pass


P = collections.namedtuple("P", "x y")


def shared_structures(r):
    a = [r, "shared"]
    s = "a string shared twice " + str(r)
    b = b"bytes shared" + bytes([r % 256])
    t = (r, 2.5)
    d = {"k": r}
    return [
        [a, a],
        {"x": a, "y": [a, (a,)]},
        [s, s, (s, s)],
        [b, {"b": b}],
        [t, t, [t]],
        (d, d),
        {"first": s, s: "key and value"},
    ]


def plain_objects(r):
    nan_payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001 + r))[0]
    return [
        None, True, False, 0, 1, -1, r, 255, -256, 2**31, -(2**31),
        2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, -(2**64),
        2**1000 + r, -(2**1000) - r, 12345678901234567890123456789,
        0.0, -0.0, 1.5 + r, math.inf, -math.inf, math.nan, nan_payload, 5e-324, 1.7976931348623157e308,
        "", "x", "ascii text", "caf\u00e9", "\u00ff" * 3, "\u4e2d\u6587", "\U0001f600 emoji",
        "\ud800", "a\udfffb", "\ud83d\ude00 surrogate pair kept as two", "mix \u00e9\u4e2d\U0001f600\udc80",
        "x" * 100_000,
        b"", b"\x00", b"\x00\xff" * 10, bytes(range(256)), bytes(50_000),
        (), (r,), (1, "two", 3.0, None, True), [], [r], [[], [[]], ((),)],
        {}, {"rank": r}, {1: "int key", 1.5: "float key", (1, "t"): "tuple key", "s": "str key", None: 0, True: 1, b"b": 2},
        {"z": 1, "a": 2, "m": 3},  # insertion order, not sorted
        {"payload": bytes(8), "tag": "x"},
        {"payload": bytes(1024), "tag": "x"},
        list(range(r, r + 1000)),
        [float(i) / 3 for i in range(100)],
        {str(i): [i, str(i), (i,)] for i in range(100)},  # memo beyond its linear part
        [True, 1, 1.0, False, 0, 0.0],
    ] + shared_structures(r)


def fallback_objects(r):
    """Not plain builtins: these go through pickle (and must still arrive)."""
    rec = [r]
    rec.append(rec)
    rec_dict = {"r": r}
    rec_dict["self"] = rec_dict
    deep = r
    for _ in range(200):
        deep = [deep]
    return [
        Color.RED, Text("subclass"), collections.OrderedDict(a=r), collections.defaultdict(int, {"a": r}),
        P(r, 2), bytearray(b"ba"), {r, 2}, frozenset({r}), complex(r, 1),
        rec, rec_dict, deep,
        {"array": np.arange(10) + r, "plain": [1, 2]},  # plain parts before the array, then pickle
        [1, 2, 3, Color.RED],
    ]


def exchange(obj, tag=0):
    req = comm.isend(obj, dest=right, tag=tag)
    got = comm.recv(source=left, tag=tag)
    req.wait()
    return got


def raw_exchange(obj, tag=0):
    """Sends `obj` as an object, receives its bytes as they travelled."""
    req = comm.isend(obj, dest=right, tag=tag)
    st = MPI.Status()
    comm.Probe(source=left, tag=tag, status=st)
    raw = bytearray(st.Get_count(MPI.BYTE))
    comm.Recv(raw, source=left, tag=tag)
    req.wait()
    return bytes(raw)


def check(got, obj, what):
    want = pickled(obj)
    assert shape(got) == shape(want), f"{WHERE} {what}: got {got!r:.300} want {want!r:.300}"


def test_point_to_point():
    mine, theirs = plain_objects(rank), plain_objects(left)
    for i, (obj, want) in enumerate(zip(mine, theirs)):
        check(exchange(obj, tag=i), want, f"plain #{i}")
    mine, theirs = fallback_objects(rank), fallback_objects(left)
    for i, (obj, want) in enumerate(zip(mine, theirs)):
        got = exchange(obj, tag=i)
        if i in (9, 10):  # recursive structures
            key = 1 if i == 9 else "self"
            assert type(got) is type(want) and got[key] is got, f"{WHERE} recursion #{i}: {got!r:.100}"
        elif i == 12:
            assert np.array_equal(got["array"], want["array"]) and got["plain"] == [1, 2], WHERE
        else:
            check(got, want, f"fallback #{i}")
    # Blocking send/recv and sendrecv go the same way.
    for i, (obj, want) in enumerate(zip(plain_objects(rank), plain_objects(left))):
        check(comm.sendrecv(obj, dest=right, sendtag=i, source=left, recvtag=i), want, f"sendrecv #{i}")
    comm.Barrier()


def test_format_used():
    # Plain builtins travel compact, anything else as a pickle.
    raw = raw_exchange({"payload": bytes(8), "tag": "x"}, tag=1)
    assert raw.startswith(PLAIN_PREFIX), f"{WHERE} plain dict sent as {raw[:8]!r}"
    raw = raw_exchange({"x": Color.RED}, tag=2)
    assert raw.startswith(b"\x80"), f"{WHERE} IntEnum sent as {raw[:8]!r}"
    # A custom MPI.pickle (dill, cloudpickle, ...) is always used: no
    # compact format then.
    calls = []

    def dumps(obj, protocol=None):
        calls.append("dumps")
        return pickle.dumps(obj, protocol)

    def loads(data):
        calls.append("loads")
        return pickle.loads(data)

    MPI.pickle.__init__(dumps, loads)
    try:
        raw = raw_exchange({"payload": bytes(8)}, tag=3)
        assert raw.startswith(b"\x80"), f"{WHERE} custom pickle: sent as {raw[:8]!r}"
        got = exchange([1, "two"], tag=4)
        assert got == [1, "two"] and calls.count("dumps") == 2 and calls.count("loads") == 1, f"{WHERE} {calls}"
        # Only a replaced loads: still no compact format.
        MPI.pickle.__init__(None, loads)
        raw = raw_exchange((1, 2), tag=5)
        assert raw.startswith(b"\x80"), f"{WHERE} custom loads: sent as {raw[:8]!r}"
    finally:
        MPI.pickle.__init__()
    raw = raw_exchange((1, 2), tag=6)
    assert raw.startswith(PLAIN_PREFIX), f"{WHERE} default pickle again: sent as {raw[:8]!r}"
    comm.Barrier()


def test_mixed_settings():
    # Even ranks keep the standard pickle, odd ranks plug in their own
    # loads: a compact message reaching an odd rank goes through its
    # loads as the standard pickle of the object.
    calls = []

    def loads(data):
        calls.append(bytes(data[:1]))
        return pickle.loads(data)

    if rank % 2:
        MPI.pickle.__init__(pickle.dumps, loads)
    try:
        obj = {"from": left, "data": [1.5, "s", (None,)]}
        got = exchange({"from": rank, "data": [1.5, "s", (None,)]}, tag=7)
        check(got, obj, "mixed settings")
        if rank % 2 and COMPACT:
            assert calls == [b"\x80"], f"{WHERE} custom loads saw {calls}"
    finally:
        MPI.pickle.__init__()
    comm.Barrier()


def test_out_of_line_bytes():
    # bytes of THRESHOLD bytes or more travel as separate message parts.
    old = MPI.pickle.THRESHOLD
    MPI.pickle.THRESHOLD = 64
    try:
        big = bytes(range(256)) * (rank + 1)
        obj = {"big": big, "again": big, "small": b"x" * 10, "list": [bytes(100), bytes(65)], "tail": "t"}
        want = {"big": bytes(range(256)) * (left + 1)}
        want.update(again=want["big"], small=b"x" * 10, list=[bytes(100), bytes(65)], tail="t")
        got = exchange(obj, tag=8)
        check(got, want, "out-of-line bytes")
        assert got["big"] is got["again"], f"{WHERE} shared bytes arrived as two objects"
    finally:
        MPI.pickle.THRESHOLD = old
    big = bytes(300_000) + bytes([rank % 256])  # over the default threshold
    got = exchange({"payload": big}, tag=9)
    assert got == {"payload": bytes(300_000) + bytes([left % 256])}, WHERE
    comm.Barrier()


def test_collectives():
    for i, obj in enumerate(plain_objects(0)):
        check(comm.bcast(obj if rank == 0 else None, root=0), obj, f"bcast #{i}")
    got = comm.allgather(plain_objects(rank)[:20])
    for r in range(size):
        check(got[r], plain_objects(r)[:20], f"allgather from {r}")
    got = comm.alltoall([(rank, r, "to", [r] * r) for r in range(size)])
    for r in range(size):
        check(got[r], (r, rank, "to", [rank] * rank), f"alltoall from {r}")
    got = comm.scatter([{"for": r, "f": r / 7} for r in range(size)] if rank == 0 else None, root=0)
    check(got, {"for": rank, "f": rank / 7}, "scatter")
    got = comm.gather((rank, str(rank)), root=0)
    if rank == 0:
        check(got, [(r, str(r)) for r in range(size)], "gather")
    assert comm.allreduce(rank, op=MPI.SUM) == size * (size - 1) // 2, WHERE
    assert comm.allreduce(2**70 + rank, op=MPI.MAX) == 2**70 + size - 1, WHERE
    assert comm.allreduce([rank], op=MPI.SUM) == list(range(size)), WHERE
    got = comm.allreduce(float(rank) + 0.5, op=MPI.SUM)
    assert got == sum(r + 0.5 for r in range(size)) and type(got) is float, WHERE
    assert comm.reduce("s" * (rank + 1), op=MPI.MAX, root=0) == ("s" * size if rank == 0 else None), WHERE
    assert comm.scan(rank, op=MPI.SUM) == rank * (rank + 1) // 2, WHERE
    assert comm.allreduce(True, op=MPI.LAND) is True, WHERE
    comm.Barrier()


def test_corrupt_message():
    # A message that starts like the compact format but is not one: a
    # ValueError, never a crash.
    def message(inline, declared=None):
        n = len(inline) if declared is None else declared
        return COMPACT_MAGIC + bytes(4) + n.to_bytes(8, "little") + inline

    bad_messages = [
        message(b""),  # no value
        message(b"\xee"),  # unknown type
        message(b"\x0b" + (2**60).to_bytes(8, "little")),  # a tuple longer than the message
        message(b"\x00", declared=5),  # inline part longer than the message
        message(b"\x0e" + bytes(8)),  # memo reference to nothing
        message(b"\x00\x00"),  # bytes left over
    ]
    for i, bad in enumerate(bad_messages):
        # Not a blocking Send: at one rank it would wait for its own receive
        # (MPICH's sends to self complete only when matched; MPI allows that).
        req = comm.Isend(bad, dest=right, tag=20 + i)
        try:
            got = comm.recv(source=left, tag=20 + i)
        except ValueError:
            pass
        else:
            raise AssertionError(f"{WHERE} corrupt message #{i} decoded to {got!r}")
        req.Wait()
    comm.Barrier()


if __name__ == "__main__":
    test_point_to_point()
    test_format_used()
    test_mixed_settings()
    test_out_of_line_bytes()
    test_collectives()
    test_corrupt_message()
    print(f"OK {NAME} rank {rank}", flush=True)
