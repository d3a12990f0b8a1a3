"""Process creation and management (MPI-4.1 chapter 11) at any world size.

1. COMM_WORLD spawns two children of this same script (root: the last
   rank). Each child checks its world, its parent group and its slot in
   the merged communicator; data flows both ways, collectives run on the
   intercommunicator and on the merged one; everyone disconnects.
2. Spawn again, several times: slots of finished children are reused and
   nothing of a previous child's messages reaches a new one.
3. Spawn_multiple with soft limits and errcodes.
4. Ports: the world splits into two halves; the lower half opens a port,
   publishes it under a name; the upper half looks it up and connects.
   (World size 1: the process accepts a child that connects.)
5. Join over a TCP connection between ranks 0 and 1 (size >= 2).
Every rank prints "OK test_dynproc.py rank r".
"""

import os
import socket
import sys

from oxmpi import MPI

NAME = os.path.basename(__file__)


def child(parent):
    world = MPI.COMM_WORLD
    mode = sys.argv[1]
    assert parent != MPI.COMM_NULL
    assert parent.Is_inter() and parent.Get_size() == world.Get_size()
    if mode == "basic":
        data = parent.bcast(None, root=0)
        parent.send((world.Get_rank(), data * 2), dest=data % parent.Get_remote_size())
        merged = parent.Merge(True)
        assert merged.Get_rank() == parent.Get_remote_size() + world.Get_rank()
        total = merged.allreduce(1)
        assert total == merged.Get_size()
        merged.Free()
    elif mode == "again":
        # Only what the parent sends now may arrive here.
        msg = parent.recv(source=0, tag=7)
        assert msg == ("again", int(sys.argv[2])), msg
        assert not parent.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG)
        parent.send(world.Get_rank(), dest=0, tag=8)
    elif mode == "connect":
        port = parent.recv(source=0)
        inter = world.Connect(port, root=0)
        inter.send("hello from the connector", dest=0)
        inter.Disconnect()
    parent.Disconnect()
    assert MPI.Comm.Get_parent() == MPI.COMM_NULL


def main():
    parent = MPI.Comm.Get_parent()
    if parent != MPI.COMM_NULL:
        child(parent)
        return
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    root = size - 1
    where = f"rank {rank} of {size}"

    # 1. spawn two children
    errcodes = []
    inter = world.Spawn(sys.executable, [__file__, "basic"], maxprocs=2, root=root,
                        errcodes=errcodes)
    assert errcodes == [MPI.SUCCESS] * 2, (where, errcodes)
    assert inter.Get_remote_size() == 2 and inter.Get_size() == size, where
    inter.bcast(5 if rank == 0 else None, root=MPI.ROOT if rank == 0 else MPI.PROC_NULL)
    got = [inter.recv(source=MPI.ANY_SOURCE) for _ in range(2)] if rank == 5 % size else []
    if rank == 5 % size:
        assert sorted(got) == [(0, 10), (1, 10)], (where, got)
    merged = inter.Merge(False)
    assert merged.Get_rank() == rank and merged.allreduce(1) == size + 2, where
    merged.Free()
    inter.Disconnect()

    # 2. spawn again and again: reused slots start clean
    for i in range(3):
        inter = world.Spawn(sys.executable, [__file__, "again", str(i)], maxprocs=1, root=0)
        if rank == 0:
            # A message the child never receives, sent before the real one,
            # would be an error: send only the real one, then check the child
            # saw nothing else.
            inter.send(("again", i), dest=0, tag=7)
            assert inter.recv(source=0, tag=8) == 0, where
        inter.Disconnect()

    # 3. Spawn_multiple: two commands, soft counts, nested errcodes
    errcodes = []
    info = MPI.Info.Create()
    info.Set("soft", "1:2")
    inter = world.Spawn_multiple([sys.executable] * 2, [[__file__, "basic"]] * 2,
                                 [1, 1], [info, MPI.INFO_NULL], root=0, errcodes=errcodes)
    info.Free()
    assert errcodes == [[MPI.SUCCESS], [MPI.SUCCESS]], (where, errcodes)
    inter.bcast(3 if rank == 0 else None, root=MPI.ROOT if rank == 0 else MPI.PROC_NULL)
    if rank == 3 % size:
        assert sorted(inter.recv(source=MPI.ANY_SOURCE) for _ in range(2)) == [(0, 6), (1, 6)]
    merged = inter.Merge(False)
    assert merged.allreduce(1) == size + 2, where
    merged.Free()
    inter.Disconnect()

    # 4. ports and names
    service = f"oxmpi-test-{os.getppid()}"
    if size == 1:
        port = MPI.Open_port()
        inter = world.Spawn(sys.executable, [__file__, "connect"], maxprocs=1)
        inter.send(port, dest=0)
        peer = MPI.COMM_WORLD.Accept(port, root=0)
        assert peer.recv(source=0) == "hello from the connector"
        peer.Disconnect()
        inter.Disconnect()
        MPI.Close_port(port)
    else:
        low = rank < size // 2
        half = world.Split(0 if low else 1, rank)
        if low:
            port = MPI.Open_port() if half.Get_rank() == 0 else None
            if half.Get_rank() == 0:
                MPI.Publish_name(service, port)
            world.Barrier()
            other = half.Accept(port, root=0)
            if half.Get_rank() == 0:
                MPI.Unpublish_name(service, port)
                MPI.Close_port(port)
        else:
            world.Barrier()
            port = MPI.Lookup_name(service) if half.Get_rank() == 0 else None
            other = half.Connect(port, root=0)
        assert other.Get_remote_size() == size - half.Get_size(), where
        total = other.allreduce(rank)
        assert total == sum(r for r in range(size) if (r < size // 2) != low), (where, total)
        other.Disconnect()
        half.Free()
        try:
            MPI.Lookup_name(service)
        except MPI.Exception as exc:
            assert exc.Get_error_class() == MPI.ERR_NAME, where
        else:
            raise AssertionError(f"{where}: unpublished name still found")

    # 5. join
    if size >= 2 and rank in (0, 1):
        if rank == 0:
            server = socket.socket()
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            world.send(server.getsockname()[1], dest=1, tag=99)
            conn, _ = server.accept()
            server.close()
        else:
            conn = socket.create_connection(("127.0.0.1", world.recv(source=0, tag=99)))
        joined = MPI.Comm.Join(conn.fileno())
        conn.close()
        assert joined.Is_inter() and joined.Get_remote_size() == 1, where
        joined.send(rank, dest=0)
        assert joined.recv(source=0) == 1 - rank, where
        joined.Disconnect()
    if size >= 2:
        world.Barrier()

    # Errors: a port name that is not one.
    try:
        MPI.COMM_SELF.Connect("not a port")
    except MPI.Exception as exc:
        assert exc.Get_error_class() == MPI.ERR_PORT, where
    else:
        raise AssertionError(f"{where}: bad port accepted")
    print(f"OK {NAME} rank {rank}", flush=True)


if __name__ == "__main__":
    main()
