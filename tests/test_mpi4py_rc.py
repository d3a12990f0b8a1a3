"""mpi4py's runtime configuration (``mpi4py.rc``, ``MPI4PY_RC_*``,
``MPI4PY_PICKLE_PROTOCOL``) as the compatibility package honours it, and
mpi4py's object-collective conventions that mpi4py's pkl5 tests rely on."""

import textwrap

import pytest

from mpirun import assert_ok, describe, run_mpi


def run_script(tmp_path, body, n=1, env=None):
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent(body))
    res = run_mpi(script, n, timeout=60, env=env)
    assert_ok(res)
    return res


@pytest.mark.parametrize(
    "setting, provided",
    [
        ({}, "THREAD_MULTIPLE"),
        ({"MPI4PY_RC_THREAD_LEVEL": "single"}, "THREAD_SINGLE"),
        ({"MPI4PY_RC_THREAD_LEVEL": "funneled"}, "THREAD_FUNNELED"),
        ({"MPI4PY_RC_THREAD_LEVEL": "serialized"}, "THREAD_SERIALIZED"),
        ({"MPI4PY_RC_THREADS": "false"}, "THREAD_SINGLE"),
    ],
)
def test_thread_level_from_environment(tmp_path, setting, provided):
    res = run_script(
        tmp_path,
        f"""
        from mpi4py import MPI
        assert MPI.Query_thread() == MPI.{provided}, MPI.Query_thread()
        assert MPI.Init_thread() == MPI.{provided}
        print("ok")
        """,
        env=setting,
    )
    assert "ok" in res.stdout, describe(res)


def test_thread_level_from_rc_object(tmp_path):
    run_script(
        tmp_path,
        """
        import mpi4py
        mpi4py.rc.thread_level = "funneled"
        from mpi4py import MPI
        assert MPI.Query_thread() == MPI.THREAD_FUNNELED
        """,
    )


@pytest.mark.parametrize(
    "errors, handler",
    [
        (None, "ERRORS_RETURN"),
        ("exception", "ERRORS_RETURN"),
        ("default", "ERRORS_ARE_FATAL"),
        ("fatal", "ERRORS_ARE_FATAL"),
        ("abort", "ERRORS_ABORT"),
    ],
)
def test_errors_sets_predefined_handlers(tmp_path, errors, handler):
    set_rc = f"mpi4py.rc.errors = {errors!r}" if errors else ""
    run_script(
        tmp_path,
        f"""
        import mpi4py
        {set_rc}
        from mpi4py import MPI
        for comm in (MPI.COMM_SELF, MPI.COMM_WORLD):
            eh = comm.Get_errhandler()
            assert eh == MPI.{handler}, (comm, eh)
        """,
        n=2,
    )


def test_pickle_protocol_from_environment(tmp_path):
    run_script(
        tmp_path,
        """
        import pickle
        from mpi4py import MPI
        assert MPI.pickle.PROTOCOL == 2, MPI.pickle.PROTOCOL
        data = MPI.pickle.dumps([1, 2])
        assert data[:2] == b"\\x80\\x02", data  # a protocol 2 stream
        comm = MPI.COMM_WORLD
        peer = (comm.rank + 1) % comm.size
        got = comm.sendrecv({"rank": comm.rank}, peer, source=(comm.rank - 1) % comm.size)
        assert got == {"rank": (comm.rank - 1) % comm.size}
        """,
        n=2,
        env={"MPI4PY_PICKLE_PROTOCOL": "2"},
    )


def test_none_stands_for_a_list_of_nones(tmp_path):
    run_script(
        tmp_path,
        """
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        for root in range(comm.size):
            assert comm.scatter(None, root) is None
        assert comm.alltoall(None) == [None] * comm.size
        try:
            comm.alltoall([None] * (comm.size + 1))
        except ValueError:
            pass
        else:
            raise AssertionError("alltoall took too many items")
        """,
        n=3,
    )


def test_pkl5_bigmpi_blocks(tmp_path):
    run_script(
        tmp_path,
        """
        from mpi4py import MPI
        from mpi4py.util import pkl5
        big = pkl5._BigMPI()
        big.blocksize = 64
        with big:
            buf, count, dtype = big(bytearray(64))
            assert (count, dtype) == (64, MPI.BYTE)
            buf, count, dtype = big(bytearray(65))
            assert count == 1 and dtype.Get_size() == 65
        assert isinstance(pkl5.pickle, pkl5.Pickle)
        """,
    )


def test_integer_handles_and_safe_free(tmp_path):
    run_script(
        tmp_path,
        """
        import weakref
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        cart = comm.Create_cart([comm.size])
        objs = [MPI.COMM_SELF, comm, cart, MPI.INT, MPI.INT.Dup(), MPI.SUM,
                comm.Get_group(), MPI.GROUP_EMPTY, MPI.Info.Create(), MPI.INFO_ENV,
                MPI.ERRORS_RETURN, MPI.COMM_NULL, MPI.DATATYPE_NULL, MPI.WIN_NULL]
        for obj in objs:
            for n in (obj.handle, obj.toint(), obj.py2f()):
                assert n == obj.handle and n >= 0, (obj, n)
                again = type(obj).fromint(n)
                assert again == obj and type(again) is type(obj), (obj, again)
            assert (obj.handle == 0) == (not obj)
            weakref.ref(obj)
        # Comm itself rebuilds the communicator's own class.
        assert type(MPI.Comm.fromhandle(cart.handle)) is MPI.Cartcomm
        # Different objects, different numbers; stale numbers are refused.
        dup = comm.Dup()
        n = dup.handle
        assert n not in (comm.handle, cart.handle)
        dup.Free()
        try:
            MPI.Comm.fromhandle(n)
        except ValueError:
            pass
        else:
            raise AssertionError("a freed communicator's handle was accepted")
        # free(): constants stay, other objects naming them become null.
        for const in (MPI.INT, MPI.SUM, MPI.COMM_SELF, MPI.GROUP_EMPTY, MPI.INFO_ENV,
                      MPI.ERRORS_RETURN, MPI.MESSAGE_NO_PROC):
            const.free()
            assert const
            if not isinstance(const, MPI.Errhandler):
                clone = type(const)(const)
                clone.free()
                assert not clone, const
                assert const
        cart.Free()
        """,
        n=2,
    )
