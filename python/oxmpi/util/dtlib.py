"""Conversions between NumPy dtypes and MPI datatypes.

``from_numpy_dtype(dtype)`` builds an MPI datatype with the same memory
layout as a NumPy dtype (scalars, sub-arrays, structs with their offsets
and itemsize); ``to_numpy_dtype(datatype)`` goes the other way for the
datatypes NumPy can describe (named types, duplicates, contiguous and
full subarrays, structs, resized structs, vectors and indexed types).
Without NumPy, ``to_numpy_dtype`` returns the dtype *specification*
(a type code, a ``(spec, shape)`` tuple, or a dict of fields).
"""

from .. import MPI

try:
    from numpy import dtype as _np_dtype
except ImportError:  # pragma: no cover - NumPy is optional
    _np_dtype = None

__all__ = ["from_numpy_dtype", "to_numpy_dtype"]

# Pair types for MINLOC/MAXLOC and the predefined type of their value.
_PAIR_VALUES = (
    ("SHORT_INT", "SHORT"),
    ("INT_INT", "INT"),
    ("LONG_INT", "LONG"),
    ("FLOAT_INT", "FLOAT"),
    ("DOUBLE_INT", "DOUBLE"),
    ("LONG_DOUBLE_INT", "LONG_DOUBLE"),
)


def _make(spec, **kwargs):
    """A NumPy dtype from `spec`, or the spec itself without NumPy."""
    if _np_dtype is None:
        return (spec, kwargs) if kwargs else spec
    return _np_dtype(spec, **kwargs)


class _Decoded:
    """A datatype's decoding; frees the datatypes it got from MPI."""

    def __init__(self, datatype):
        self.base, self.combiner, self.params = datatype.decode()
        self._owned = [self.base, *self.params.get("datatypes", ())]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for t in self._owned:
            if t and not t.is_predefined:
                t.Free()


# Alignments are powers of two dividing this, so offsets matter modulo it.
_ALIGN_PERIOD = 64


def _alignment_needs(datatype):
    """Where `datatype`'s elements sit and what alignment each needs, as a
    set of (offset modulo _ALIGN_PERIOD, alignment). Each datatype in the
    tree is decoded once, however many displacements place it."""
    if datatype.is_predefined:
        return {(0, MPI._typealign(datatype) or 1)}
    with _Decoded(datatype) as d:
        p = d.params
        comb = datatype.combiner
        if comb == MPI.COMBINER_STRUCT:
            places = list(zip(p["datatypes"], p["displacements"]))
        elif comb == MPI.COMBINER_RESIZED:
            places = [(d.base, 0), (d.base, p["extent"])]
        elif comb == MPI.COMBINER_HVECTOR:
            places = [(d.base, p["stride"] if p["count"] > 1 else 0)]
        elif comb in (MPI.COMBINER_HINDEXED, MPI.COMBINER_HINDEXED_BLOCK):
            places = [(d.base, disp) for disp in p["displacements"]]
        else:
            places = [(d.base, 0)]
        needs = set()
        inner = {}
        for t, disp in places:
            key = id(t)
            if key not in inner:
                inner[key] = _alignment_needs(t)
            needs.update(((disp + r) % _ALIGN_PERIOD, a) for r, a in inner[key])
        return needs


def _aligned_at(datatype, *offsets):
    """Whether every element of `datatype`, placed at each of `offsets`,
    sits at a multiple of its own alignment (what NumPy calls an aligned
    struct)."""
    needs = _alignment_needs(datatype)
    return all((offset + r) % a == 0 for offset in offsets for r, a in needs)


def _field(datatype, count):
    """The format of a field of `count` elements of `datatype`."""
    spec = to_numpy_dtype(datatype)
    return spec if count == 1 else (spec, count)


def _struct(names_formats_offsets, itemsize, aligned):
    fields = {
        "names": [f"f{i}" for i in range(len(names_formats_offsets))],
        "formats": [f for f, _ in names_formats_offsets],
        "offsets": [o for _, o in names_formats_offsets],
        "aligned": aligned,
    }
    if itemsize is not None:
        fields["itemsize"] = itemsize
    return _make(fields)


def _named(datatype):
    code = MPI._typecode(datatype)
    if code is not None:
        return _make(code)
    for pair, value in _PAIR_VALUES:
        if datatype == getattr(MPI, pair):
            value_code = MPI._typecode(getattr(MPI, value))
            return _make(f"{value_code},i", align=True)
    raise ValueError(f"cannot convert MPI datatype {datatype.name} to NumPy")


def to_numpy_dtype(datatype):
    """The NumPy dtype with the memory layout of an MPI datatype."""
    if datatype == MPI.DATATYPE_NULL:
        raise ValueError("cannot convert MPI.DATATYPE_NULL to NumPy")
    comb = datatype.combiner
    if comb == MPI.COMBINER_NAMED:
        return _named(datatype)
    if comb in (MPI.COMBINER_F90_INTEGER, MPI.COMBINER_F90_REAL, MPI.COMBINER_F90_COMPLEX):
        return _make(MPI._typecode(datatype))
    with _Decoded(datatype) as d:
        base, p = d.base, d.params
        if comb == MPI.COMBINER_DUP:
            return to_numpy_dtype(base)
        if comb == MPI.COMBINER_CONTIGUOUS:
            return _make((to_numpy_dtype(base), (p["count"],)))
        if comb == MPI.COMBINER_SUBARRAY:
            full = p["subsizes"] == p["sizes"] and not any(p["starts"])
            if not full:
                raise ValueError("cannot convert a partial subarray to NumPy")
            shape = p["sizes"]
            if p["order"] == MPI.ORDER_FORTRAN:
                # Fortran order is C order of the reversed shape.
                shape = shape[::-1]
            return _make((to_numpy_dtype(base), tuple(shape)))
        if comb == MPI.COMBINER_RESIZED:
            if base.combiner != MPI.COMBINER_STRUCT or p["lb"] != 0:
                raise ValueError("cannot convert a resized MPI datatype to NumPy")
            with _Decoded(base) as s:
                q = s.params
                fields = [
                    (_field(t, n), disp)
                    for t, n, disp in zip(q["datatypes"], q["blocklengths"], q["displacements"])
                ]
                aligned = _aligned_at(base, 0, p["extent"])
                return _struct(fields, datatype.extent, aligned)
        if comb == MPI.COMBINER_STRUCT:
            fields = [
                (_field(t, n), disp)
                for t, n, disp in zip(p["datatypes"], p["blocklengths"], p["displacements"])
            ]
            aligned = all(_aligned_at(t, disp) for t, disp in zip(p["datatypes"], p["displacements"]))
            return _struct(fields, datatype.extent, aligned)
        if comb in (MPI.COMBINER_VECTOR, MPI.COMBINER_HVECTOR):
            count, blen = p["count"], p["blocklength"]
            stride = p["stride"]
            if comb == MPI.COMBINER_VECTOR:
                stride *= base.extent
                aligned = _aligned_at(base, 0)
            else:
                stride = stride if count > 1 else 0
                aligned = _aligned_at(base, stride)
            elem = to_numpy_dtype(base)
            fields = [((elem, (blen,)), i * stride) for i in range(count)]
            return _struct(fields, datatype.extent, aligned)
        if comb in (
            MPI.COMBINER_INDEXED,
            MPI.COMBINER_HINDEXED,
            MPI.COMBINER_INDEXED_BLOCK,
            MPI.COMBINER_HINDEXED_BLOCK,
        ):
            disps = p["displacements"]
            if "blocklengths" in p:
                blens = p["blocklengths"]
            else:
                blens = [p["blocklength"]] * len(disps)
            in_bytes = comb in (MPI.COMBINER_HINDEXED, MPI.COMBINER_HINDEXED_BLOCK)
            scale = 1 if in_bytes else base.extent
            aligned = _aligned_at(base, 0, *(disps if in_bytes else ()))
            elem = to_numpy_dtype(base)
            fields = [((elem, (n,)), x * scale) for n, x in zip(blens, disps)]
            # NumPy sizes the struct to its last field.
            return _struct(fields, None, aligned)
    raise ValueError("cannot convert this MPI datatype to NumPy")


def from_numpy_dtype(dtype):
    """An MPI datatype with the memory layout of a NumPy dtype."""
    if _np_dtype is None:
        raise RuntimeError("NumPy is not available")
    dtype = _np_dtype(dtype)
    if dtype.hasobject:
        raise ValueError("NumPy dtypes holding Python objects have no MPI datatype")
    if not dtype.isnative:
        raise ValueError("NumPy dtype not in native byte order")
    if dtype.fields:
        members = []
        try:
            offsets = []
            for name in dtype.names:
                ftype, offset = dtype.fields[name][:2]
                members.append(from_numpy_dtype(ftype))
                offsets.append(offset)
            struct = MPI.Datatype.Create_struct([1] * len(members), offsets, members)
        finally:
            for m in members:
                m.Free()
        try:
            # The struct's own padding is C's; NumPy's itemsize decides.
            return struct.Create_resized(0, dtype.itemsize)
        finally:
            struct.Free()
    if dtype.subdtype:
        elem, shape = dtype.subdtype
        base = from_numpy_dtype(elem)
        try:
            if len(shape) == 1:
                return base.Create_contiguous(shape[0])
            return base.Create_subarray(shape, shape, [0] * len(shape))
        finally:
            base.Free()
    try:
        named = MPI.Datatype.fromcode(dtype.char)
    except ValueError:
        raise ValueError(f"NumPy dtype {dtype} has no MPI datatype") from None
    return named.Dup()
