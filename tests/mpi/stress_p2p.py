"""Point-to-point stress: many messages of random sizes and tags, received
with ANY_SOURCE and ANY_TAG, every byte checksummed, none lost, in order
per sender.

Every rank derives the whole job's traffic plan from one seed: sender s
sends its share of STRESS_MESSAGES messages (default 100,000 in all) to
random destinations (itself included), with random tags and sizes from 0 B
to 4 MiB, mostly small. So each rank knows exactly what it must receive
from whom, in which order.

Sends are Isend or Issend (one in eight), at most WINDOW in flight.
Receives are a ring of RING posted Irecv(ANY_SOURCE, ANY_TAG) into 4 MiB
buffers, handled in posting order: MPI matches posted receives in posting
order, so that is the order in which each sender's messages matched. A
rank that must wait waits on its oldest receive or any of its sends
(Waitany), never on sends alone, so no two ranks can wait on each other.

Each message carries a header (sender, sequence number, tag, size, CRC-32
of the body); the receiver checks the header against the status and the
plan, and the CRC against the body it got. At the end no message may be
left unreceived. Every rank prints "OK stress_p2p.py rank r (...)".
"""

import os
import random
import struct
import sys
import time
import zlib

import numpy as np

from oxmpi import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
NAME = os.path.basename(__file__)

TOTAL = int(os.environ.get("STRESS_MESSAGES", "100000"))
SEED = int(os.environ.get("STRESS_SEED", "20240611"))
MAX_SIZE = 4 << 20
WINDOW = 64  # sends in flight per rank
RING = 8  # receives posted per rank
HEADER = struct.Struct("<iiiiI")  # src, seq, tag, size, crc32(body)
POOL = np.random.default_rng(SEED).integers(0, 256, 2 * MAX_SIZE, dtype=np.uint8)


def message_size(rng):
    """0 B to 4 MiB, mostly small: most messages travel eagerly, a few
    percent by rendezvous, a few hundred are megabytes."""
    u = rng.random()
    if u < 0.80:
        return rng.randrange(0, 1024)
    if u < 0.96:
        return rng.randrange(1024, 64 << 10)
    if u < 0.997:
        return rng.randrange(64 << 10, 1 << 20)
    return rng.randrange(1 << 20, MAX_SIZE + 1)


def plan_of(sender):
    """The messages `sender` sends, in order: (dest, tag, size)."""
    count = TOTAL // size + (1 if sender < TOTAL % size else 0)
    rng = random.Random(SEED * 1009 + sender)
    return [(rng.randrange(size), rng.randrange(0, 1 << 15), message_size(rng)) for _ in range(count)]


def body_of(src, seq, nbytes):
    off = (src * 7919 + seq * 104729) % (len(POOL) - nbytes + 1)
    return POOL[off : off + nbytes]


def fail(msg):
    sys.stderr.write(f"[{NAME} rank {rank}] {msg}\n")
    sys.stderr.flush()
    comm.Abort(1)


t0 = time.monotonic()
plans = [plan_of(s) for s in range(size)]
mine = plans[rank]
# expected[s]: (seq, tag, size) of the messages s sends to me, in order.
expected = [[(seq, tag, n) for seq, (d, tag, n) in enumerate(plans[s]) if d == rank] for s in range(size)]
next_from = [0] * size
to_receive = sum(len(e) for e in expected)

ring = []  # [request, buffer], oldest first
posted = 0
received = 0
nbytes_in = 0


def post_receives():
    global posted
    while len(ring) < RING and posted < to_receive:
        buf = np.empty(HEADER.size + MAX_SIZE, dtype=np.uint8)
        ring.append([comm.Irecv([buf, MPI.BYTE], MPI.ANY_SOURCE, MPI.ANY_TAG), buf])
        posted += 1


def check(status, buf):
    global received, nbytes_in
    src, tag, count = status.Get_source(), status.Get_tag(), status.Get_count(MPI.BYTE)
    if not 0 <= src < size:
        fail(f"status source {src}")
    if count < HEADER.size:
        fail(f"{count}-byte message from {src} (tag {tag}) has no header")
    h_src, h_seq, h_tag, h_size, h_crc = HEADER.unpack_from(buf, 0)
    if next_from[src] >= len(expected[src]):
        fail(f"unexpected extra message from {src}: header {(h_src, h_seq, h_tag, h_size)}")
    seq, etag, esize = expected[src][next_from[src]]
    if (h_src, h_seq, h_tag, h_size) != (src, seq, etag, esize) or tag != etag:
        fail(
            f"from {src}: expected seq {seq} tag {etag} size {esize}, got header "
            f"{(h_src, h_seq, h_tag, h_size)} with status tag {tag} (lost or reordered message)"
        )
    if count != HEADER.size + esize:
        fail(f"from {src} seq {seq}: {count} bytes received, {HEADER.size + esize} sent")
    body = buf[HEADER.size : HEADER.size + esize]
    if zlib.crc32(body) != h_crc:
        fail(f"from {src} seq {seq}: {esize}-byte body fails its checksum")
    next_from[src] += 1
    received += 1
    nbytes_in += count


def drain():
    """Handles the receives that completed, oldest first; reposts."""
    progressed = False
    status = MPI.Status()
    while ring and ring[0][0].Test(status):
        check(status, ring.pop(0)[1])
        progressed = True
    post_receives()
    return progressed


sends = []  # [request, message] in flight
post_receives()
sent = 0
while sent < len(mine) or sends or received < to_receive:
    while sent < len(mine) and len(sends) < WINDOW:
        dest, tag, n = mine[sent]
        body = body_of(rank, sent, n)
        msg = np.empty(HEADER.size + n, dtype=np.uint8)
        HEADER.pack_into(msg, 0, rank, sent, tag, n, zlib.crc32(body))
        msg[HEADER.size :] = body
        isend = comm.Issend if sent % 8 == 7 else comm.Isend
        sends.append([isend([msg, MPI.BYTE], dest, tag), msg])
        sent += 1
        if sent % 16 == 0:
            drain()
    drain()
    if sends:
        done = MPI.Request.Testsome([r for r, _ in sends])
        if done:
            keep = set(range(len(sends))) - set(done)
            sends = [sends[i] for i in sorted(keep)]
            continue
    if received == to_receive and not sends:
        break
    # Nothing moved: wait for the oldest receive or any send.
    waitlist = ([ring[0][0]] if ring else []) + [r for r, _ in sends]
    status = MPI.Status()
    idx = MPI.Request.Waitany(waitlist, status)
    if ring and idx == 0:
        check(status, ring.pop(0)[1])
        post_receives()
    elif idx != MPI.UNDEFINED:
        del sends[idx - (1 if ring else 0)]

if ring:
    fail(f"{len(ring)} receives still posted after all {to_receive} messages arrived")
comm.Barrier()
if comm.Iprobe(MPI.ANY_SOURCE, MPI.ANY_TAG):
    st = MPI.Status()
    comm.Probe(MPI.ANY_SOURCE, MPI.ANY_TAG, st)
    fail(f"a message nobody expected is left: from {st.source} tag {st.tag}")
comm.Barrier()
elapsed = time.monotonic() - t0
print(
    f"OK {NAME} rank {rank} ({len(mine)} sent, {received} received, "
    f"{nbytes_in / 2**20:.0f} MiB in, {elapsed:.1f} s)",
    flush=True,
)
