//! The three binary interfaces an MPI library can have, and how oxmpi's
//! numbers and handles translate to each.
//!
//! Every fact here comes from the library's own C header:
//!
//! * MPICH family (`libmpi.so.12`: MPICH, Intel MPI, Cray MPICH, MVAPICH):
//!   MPICH 5.0.2's `include/mpi.h`. Handles are `int` constants with the
//!   object kind and size encoded in their bits; `MPI_Status` is
//!   `{count_lo, count_hi_and_cancelled, MPI_SOURCE, MPI_TAG, MPI_ERROR}`.
//! * Open MPI (`libmpi.so.40`): Open MPI 5.0.11's `include/mpi.h`. Handles
//!   are pointers; a predefined handle is the address of an exported object
//!   (`MPI_COMM_WORLD` is `&ompi_mpi_comm_world`), found with `dlsym`;
//!   `MPI_Status` is `{MPI_SOURCE, MPI_TAG, MPI_ERROR, _cancelled,
//!   size_t _ucount}`.
//! * MPI-5 standard ABI (`libmpi_abi.so.1`): MPICH 5.0.2's
//!   `include/mpi_abi.h`. Handles are pointers to incomplete structs whose
//!   predefined values are small integers (`MPI_COMM_WORLD` is
//!   `(MPI_Comm)0x101`); `MPI_Status` is `{MPI_SOURCE, MPI_TAG, MPI_ERROR,
//!   int MPI_internal[5]}`.
//!
//! oxmpi never reads a status's private count fields: it asks the library
//! (`MPI_Get_count`, `MPI_Get_count_c`, `MPI_Get_elements_x`), so only the
//! layout's size and its three public fields matter.

use std::ffi::{c_int, c_void};
use std::fmt::Debug;

use crate::datatype::Basic;
use crate::error::{class, Result};
use crate::op::Predefined;

use super::library::Loaded;

/// `MPI_Count`: `long long` (MPICH, Open MPI), `int64_t` (standard ABI).
pub(crate) type MpiCount = i64;
/// `MPI_Aint`: `long` (MPICH), `ptrdiff_t` (Open MPI), `intptr_t` (ABI).
pub(crate) type MpiAint = isize;

/// The public fields of a library's `MPI_Status`.
pub(crate) trait RawStatus: Copy + Default + Send + Sync + 'static {
    fn source(&self) -> c_int;
    fn tag(&self) -> c_int;
}

/// One binary interface. Every handle kind of one ABI has the same C type
/// (`int` for MPICH, a pointer for the others), so one `H` covers them all.
pub(crate) trait Abi: Sized + Send + Sync + 'static {
    /// `MPI_Comm`, `MPI_Datatype`, `MPI_Request`, ... as passed to C.
    type H: Copy + Eq + Debug + Send + Sync + 'static;
    type Status: RawStatus;
    const ANY_SOURCE: c_int;
    const ANY_TAG: c_int;
    const PROC_NULL: c_int;
    const UNDEFINED: c_int;
    const THREAD_MULTIPLE: c_int;
    /// `MPI_IN_PLACE` as an address.
    const IN_PLACE: usize;
    /// The `MPI_UNIVERSE_SIZE` attribute key.
    const KEYVAL_UNIVERSE_SIZE: c_int;
    /// The `MPI_TAG_UB` attribute key.
    const KEYVAL_TAG_UB: c_int;
    /// An error class in the library's numbering, in oxmpi's.
    fn class_to_oxmpi(class: c_int) -> i32;
    /// The predefined handles.
    fn handles(lib: &Loaded) -> Result<Handles<Self::H>>;
}

/// Predefined handles of one library.
pub(crate) struct Handles<H> {
    pub comm_world: H,
    pub comm_self: H,
    pub comm_null: H,
    pub request_null: H,
    pub message_null: H,
    pub errors_return: H,
    pub info_null: H,
    pub byte: H,
    pub int: H,
    pub ops: Ops<H>,
    pub types: Types<H>,
}

/// The predefined reduction operations the library computes itself.
pub(crate) struct Ops<H> {
    pub max: H,
    pub min: H,
    pub sum: H,
    pub prod: H,
    pub land: H,
    pub band: H,
    pub lor: H,
    pub bor: H,
    pub lxor: H,
    pub bxor: H,
    pub maxloc: H,
    pub minloc: H,
}

impl<H: Copy> Ops<H> {
    /// The library's operation for `p`; None for REPLACE and NO_OP, which
    /// MPI defines only for one-sided accumulates (oxmpi reduces with them,
    /// so they run as user operations).
    pub fn get(&self, p: Predefined) -> Option<H> {
        use Predefined::*;
        Some(match p {
            Max => self.max,
            Min => self.min,
            Sum => self.sum,
            Prod => self.prod,
            Land => self.land,
            Band => self.band,
            Lor => self.lor,
            Bor => self.bor,
            Lxor => self.lxor,
            Bxor => self.bxor,
            MaxLoc => self.maxloc,
            MinLoc => self.minloc,
            Replace | NoOp => return None,
        })
    }
}

/// The predefined datatypes reductions use.
pub(crate) struct Types<H> {
    pub int8: H,
    pub uint8: H,
    pub int16: H,
    pub uint16: H,
    pub int32: H,
    pub uint32: H,
    pub int64: H,
    pub uint64: H,
    pub float: H,
    pub double: H,
    pub long_double: H,
    pub c_bool: H,
    pub c_float_complex: H,
    pub c_double_complex: H,
    pub c_long_double_complex: H,
    pub float_int: H,
    pub double_int: H,
    pub long_int: H,
    pub two_int: H,
    pub short_int: H,
    pub long_double_int: H,
}

impl<H: Copy> Types<H> {
    /// The library datatype whose reductions compute what oxmpi's kernels
    /// compute for `b`. Raw bytes and C chars reduce as 8-bit integers, as
    /// in the native runtime; half precision has no MPI type.
    pub fn for_basic(&self, b: Basic) -> Option<H> {
        use Basic::*;
        Some(match b {
            Byte | U8 => self.uint8,
            Char | I8 => self.int8,
            I16 => self.int16,
            U16 => self.uint16,
            I32 => self.int32,
            U32 => self.uint32,
            I64 => self.int64,
            U64 => self.uint64,
            F32 => self.float,
            F64 => self.double,
            LongDouble => self.long_double,
            Bool => self.c_bool,
            C32 => self.c_float_complex,
            C64 => self.c_double_complex,
            LongDoubleComplex => self.c_long_double_complex,
            FloatInt => self.float_int,
            DoubleInt => self.double_int,
            LongInt => self.long_int,
            TwoInt => self.two_int,
            ShortInt => self.short_int,
            LongDoubleInt => self.long_double_int,
            F16 => return None,
        })
    }
}

// ------------------------------------------------------------------ MPICH

/// `MPI_Status` of MPICH's `mpi.h`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct MpichStatus {
    count_lo: c_int,
    count_hi_and_cancelled: c_int,
    source: c_int,
    tag: c_int,
    error: c_int,
}

impl RawStatus for MpichStatus {
    fn source(&self) -> c_int {
        self.source
    }
    fn tag(&self) -> c_int {
        self.tag
    }
}

/// The MPICH ABI (`libmpi.so.12`).
pub(crate) struct Mpich;

/// An MPICH handle constant, written as in `mpi.h` (hex, bit 31 may be set).
const fn mh(bits: u32) -> c_int {
    bits as c_int
}

impl Abi for Mpich {
    type H = c_int;
    type Status = MpichStatus;
    const ANY_SOURCE: c_int = -2;
    const ANY_TAG: c_int = -1;
    const PROC_NULL: c_int = -1;
    const UNDEFINED: c_int = -32766;
    const THREAD_MULTIPLE: c_int = 3;
    const IN_PLACE: usize = usize::MAX; // (void *) -1
    const KEYVAL_UNIVERSE_SIZE: c_int = mh(0x6440_0009);
    const KEYVAL_TAG_UB: c_int = mh(0x6440_0001);

    fn class_to_oxmpi(c: c_int) -> i32 {
        use class::*;
        // Every class of mpi.h of MPICH 5.0 that oxmpi has.
        match c {
            0 => SUCCESS,
            76 => ERR_PROC_FAILED,  // MPI_ERR_PROC_ABORTED
            101 => ERR_PROC_FAILED, // MPIX_ERR_PROC_FAILED
            1 => ERR_BUFFER,
            2 => ERR_COUNT,
            3 => ERR_TYPE,
            4 => ERR_TAG,
            5 => ERR_COMM,
            6 => ERR_RANK,
            7 => ERR_ROOT,
            8 => ERR_GROUP,
            9 => ERR_OP,
            10 => ERR_TOPOLOGY,
            11 => ERR_DIMS,
            12 => ERR_ARG,
            13 => ERR_UNKNOWN,
            14 => ERR_TRUNCATE,
            15 => ERR_OTHER,
            16 => ERR_INTERN,
            17 => ERR_IN_STATUS,
            18 => ERR_PENDING,
            19 => ERR_REQUEST,
            20 => ERR_ACCESS,
            21 => ERR_AMODE,
            22 => ERR_BAD_FILE,
            23 => ERR_CONVERSION,
            24 => ERR_DUP_DATAREP,
            25 => ERR_FILE_EXISTS,
            26 => ERR_FILE_IN_USE,
            27 => ERR_FILE,
            28 => ERR_INFO,
            29 => ERR_INFO_KEY,
            30 => ERR_INFO_VALUE,
            31 => ERR_INFO_NOKEY,
            32 => ERR_IO,
            33 => ERR_NAME,
            34 => ERR_NO_MEM,
            35 => ERR_NOT_SAME,
            36 => ERR_NO_SPACE,
            37 => ERR_NO_SUCH_FILE,
            38 => ERR_PORT,
            39 => ERR_QUOTA,
            40 => ERR_READ_ONLY,
            41 => ERR_SERVICE,
            42 => ERR_SPAWN,
            43 => ERR_UNSUPPORTED_DATAREP,
            44 => ERR_UNSUPPORTED_OPERATION,
            45 => ERR_WIN,
            46 => ERR_BASE,
            47 => ERR_LOCKTYPE,
            48 => ERR_KEYVAL,
            49 => ERR_RMA_CONFLICT,
            50 => ERR_RMA_SYNC,
            51 => ERR_SIZE,
            52 => ERR_DISP,
            53 => ERR_ASSERT,
            55 => ERR_RMA_RANGE,
            56 => ERR_RMA_ATTACH,
            57 => ERR_RMA_SHARED,
            58 => ERR_RMA_FLAVOR,
            75 => ERR_SESSION,
            77 => ERR_VALUE_TOO_LARGE,
            80 => ERR_ERRHANDLER,
            81 => ERR_ABI,
            _ => ERR_OTHER,
        }
    }

    fn handles(_: &Loaded) -> Result<Handles<c_int>> {
        Ok(Handles {
            comm_world: mh(0x4400_0000),
            comm_self: mh(0x4400_0001),
            comm_null: mh(0x0400_0000),
            request_null: mh(0x2c00_0000),
            message_null: mh(0x2c00_0000),
            errors_return: mh(0x5400_0001),
            info_null: mh(0x1c00_0000),
            byte: mh(0x4c00_010d),
            int: mh(0x4c00_0405),
            ops: Ops {
                max: mh(0x5800_0001),
                min: mh(0x5800_0002),
                sum: mh(0x5800_0003),
                prod: mh(0x5800_0004),
                land: mh(0x5800_0005),
                band: mh(0x5800_0006),
                lor: mh(0x5800_0007),
                bor: mh(0x5800_0008),
                lxor: mh(0x5800_0009),
                bxor: mh(0x5800_000a),
                minloc: mh(0x5800_000b),
                maxloc: mh(0x5800_000c),
            },
            types: Types {
                int8: mh(0x4c00_0137),
                int16: mh(0x4c00_0238),
                int32: mh(0x4c00_0439),
                int64: mh(0x4c00_083a),
                uint8: mh(0x4c00_013b),
                uint16: mh(0x4c00_023c),
                uint32: mh(0x4c00_043d),
                uint64: mh(0x4c00_083e),
                float: mh(0x4c00_040a),
                double: mh(0x4c00_080b),
                long_double: mh(0x4c00_100c),
                c_bool: mh(0x4c00_013f),
                c_float_complex: mh(0x4c00_0840),
                c_double_complex: mh(0x4c00_1041),
                c_long_double_complex: mh(0x4c00_2042),
                float_int: mh(0x8c00_0000),
                double_int: mh(0x8c00_0001),
                long_int: mh(0x8c00_0002),
                short_int: mh(0x8c00_0003),
                two_int: mh(0x4c00_0816),
                long_double_int: mh(0x8c00_0004),
            },
        })
    }
}

// --------------------------------------------------------------- Open MPI

/// `struct ompi_status_public_t` of Open MPI's `mpi.h`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct OmpiStatus {
    source: c_int,
    tag: c_int,
    error: c_int,
    cancelled: c_int,
    ucount: usize,
}

impl RawStatus for OmpiStatus {
    fn source(&self) -> c_int {
        self.source
    }
    fn tag(&self) -> c_int {
        self.tag
    }
}

/// The Open MPI ABI (`libmpi.so.40`).
pub(crate) struct OpenMpi;

impl Abi for OpenMpi {
    type H = usize;
    type Status = OmpiStatus;
    const ANY_SOURCE: c_int = -1;
    const ANY_TAG: c_int = -1;
    const PROC_NULL: c_int = -2;
    const UNDEFINED: c_int = -32766;
    const THREAD_MULTIPLE: c_int = 3;
    const IN_PLACE: usize = 1;
    // The predefined keyvals are an enum from MPI_TAG_UB = 0.
    const KEYVAL_UNIVERSE_SIZE: c_int = 6;
    const KEYVAL_TAG_UB: c_int = 0;

    fn class_to_oxmpi(c: c_int) -> i32 {
        use class::*;
        // Every class of mpi.h of Open MPI 5.0 that oxmpi has.
        match c {
            0 => SUCCESS,
            74 => ERR_PROC_FAILED, // MPI_ERR_PROC_ABORTED
            75 => ERR_PROC_FAILED, // MPI_ERR_PROC_FAILED
            1 => ERR_BUFFER,
            2 => ERR_COUNT,
            3 => ERR_TYPE,
            4 => ERR_TAG,
            5 => ERR_COMM,
            6 => ERR_RANK,
            7 => ERR_REQUEST,
            8 => ERR_ROOT,
            9 => ERR_GROUP,
            10 => ERR_OP,
            11 => ERR_TOPOLOGY,
            12 => ERR_DIMS,
            13 => ERR_ARG,
            14 => ERR_UNKNOWN,
            15 => ERR_TRUNCATE,
            16 => ERR_OTHER,
            17 => ERR_INTERN,
            18 => ERR_IN_STATUS,
            19 => ERR_PENDING,
            20 => ERR_ACCESS,
            21 => ERR_AMODE,
            22 => ERR_ASSERT,
            23 => ERR_BAD_FILE,
            24 => ERR_BASE,
            25 => ERR_CONVERSION,
            26 => ERR_DISP,
            27 => ERR_DUP_DATAREP,
            28 => ERR_FILE_EXISTS,
            29 => ERR_FILE_IN_USE,
            30 => ERR_FILE,
            31 => ERR_INFO_KEY,
            32 => ERR_INFO_NOKEY,
            33 => ERR_INFO_VALUE,
            34 => ERR_INFO,
            35 => ERR_IO,
            36 => ERR_KEYVAL,
            37 => ERR_LOCKTYPE,
            38 => ERR_NAME,
            39 => ERR_NO_MEM,
            40 => ERR_NOT_SAME,
            41 => ERR_NO_SPACE,
            42 => ERR_NO_SUCH_FILE,
            43 => ERR_PORT,
            44 => ERR_QUOTA,
            45 => ERR_READ_ONLY,
            46 => ERR_RMA_CONFLICT,
            47 => ERR_RMA_SYNC,
            48 => ERR_SERVICE,
            49 => ERR_SIZE,
            50 => ERR_SPAWN,
            51 => ERR_UNSUPPORTED_DATAREP,
            52 => ERR_UNSUPPORTED_OPERATION,
            53 => ERR_WIN,
            68 => ERR_RMA_RANGE,
            69 => ERR_RMA_ATTACH,
            70 => ERR_RMA_FLAVOR,
            71 => ERR_RMA_SHARED,
            76 => ERR_PROC_FAILED_PENDING,
            77 => ERR_REVOKED,
            78 => ERR_SESSION,
            79 => ERR_VALUE_TOO_LARGE,
            _ => ERR_OTHER,
        }
    }

    fn handles(lib: &Loaded) -> Result<Handles<usize>> {
        let s = |name: &str| lib.object_address(name);
        Ok(Handles {
            comm_world: s("ompi_mpi_comm_world")?,
            comm_self: s("ompi_mpi_comm_self")?,
            comm_null: s("ompi_mpi_comm_null")?,
            request_null: s("ompi_request_null")?,
            message_null: s("ompi_message_null")?,
            errors_return: s("ompi_mpi_errors_return")?,
            info_null: s("ompi_mpi_info_null")?,
            byte: s("ompi_mpi_byte")?,
            int: s("ompi_mpi_int")?,
            ops: Ops {
                max: s("ompi_mpi_op_max")?,
                min: s("ompi_mpi_op_min")?,
                sum: s("ompi_mpi_op_sum")?,
                prod: s("ompi_mpi_op_prod")?,
                land: s("ompi_mpi_op_land")?,
                band: s("ompi_mpi_op_band")?,
                lor: s("ompi_mpi_op_lor")?,
                bor: s("ompi_mpi_op_bor")?,
                lxor: s("ompi_mpi_op_lxor")?,
                bxor: s("ompi_mpi_op_bxor")?,
                maxloc: s("ompi_mpi_op_maxloc")?,
                minloc: s("ompi_mpi_op_minloc")?,
            },
            types: Types {
                int8: s("ompi_mpi_int8_t")?,
                uint8: s("ompi_mpi_uint8_t")?,
                int16: s("ompi_mpi_int16_t")?,
                uint16: s("ompi_mpi_uint16_t")?,
                int32: s("ompi_mpi_int32_t")?,
                uint32: s("ompi_mpi_uint32_t")?,
                int64: s("ompi_mpi_int64_t")?,
                uint64: s("ompi_mpi_uint64_t")?,
                float: s("ompi_mpi_float")?,
                double: s("ompi_mpi_double")?,
                long_double: s("ompi_mpi_long_double")?,
                c_bool: s("ompi_mpi_c_bool")?,
                c_float_complex: s("ompi_mpi_c_float_complex")?,
                c_double_complex: s("ompi_mpi_c_double_complex")?,
                c_long_double_complex: s("ompi_mpi_c_long_double_complex")?,
                float_int: s("ompi_mpi_float_int")?,
                double_int: s("ompi_mpi_double_int")?,
                long_int: s("ompi_mpi_long_int")?,
                two_int: s("ompi_mpi_2int")?,
                short_int: s("ompi_mpi_short_int")?,
                long_double_int: s("ompi_mpi_longdbl_int")?,
            },
        })
    }
}

// ------------------------------------------------------- MPI-5 standard ABI

/// `MPI_Status` of the standard ABI (`mpi_abi.h`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct StandardStatus {
    source: c_int,
    tag: c_int,
    error: c_int,
    internal: [c_int; 5],
}

impl RawStatus for StandardStatus {
    fn source(&self) -> c_int {
        self.source
    }
    fn tag(&self) -> c_int {
        self.tag
    }
}

/// The MPI-5 standard ABI (`libmpi_abi.so.1`).
pub(crate) struct Standard;

impl Abi for Standard {
    type H = usize;
    type Status = StandardStatus;
    const ANY_SOURCE: c_int = -1;
    const ANY_TAG: c_int = -2;
    const PROC_NULL: c_int = -3;
    const UNDEFINED: c_int = -32766;
    const THREAD_MULTIPLE: c_int = 4096;
    const IN_PLACE: usize = 1;
    const KEYVAL_UNIVERSE_SIZE: c_int = 507;
    const KEYVAL_TAG_UB: c_int = 501;

    fn class_to_oxmpi(c: c_int) -> i32 {
        use class::*;
        // Every class of mpi_abi.h that oxmpi has.
        match c {
            0 => SUCCESS,
            58 => ERR_PROC_FAILED, // MPI_ERR_PROC_ABORTED
            1 => ERR_BUFFER,
            2 => ERR_COUNT,
            3 => ERR_TYPE,
            4 => ERR_TAG,
            5 => ERR_COMM,
            6 => ERR_RANK,
            7 => ERR_REQUEST,
            8 => ERR_ROOT,
            9 => ERR_GROUP,
            10 => ERR_OP,
            11 => ERR_TOPOLOGY,
            12 => ERR_DIMS,
            13 => ERR_ARG,
            14 => ERR_UNKNOWN,
            15 => ERR_TRUNCATE,
            16 => ERR_OTHER,
            17 => ERR_INTERN,
            18 => ERR_PENDING,
            19 => ERR_IN_STATUS,
            20 => ERR_ACCESS,
            21 => ERR_AMODE,
            22 => ERR_ASSERT,
            23 => ERR_BAD_FILE,
            24 => ERR_BASE,
            25 => ERR_CONVERSION,
            26 => ERR_DISP,
            27 => ERR_DUP_DATAREP,
            28 => ERR_FILE_EXISTS,
            29 => ERR_FILE_IN_USE,
            30 => ERR_FILE,
            31 => ERR_INFO_KEY,
            32 => ERR_INFO_NOKEY,
            33 => ERR_INFO_VALUE,
            34 => ERR_INFO,
            35 => ERR_IO,
            36 => ERR_KEYVAL,
            37 => ERR_LOCKTYPE,
            38 => ERR_NAME,
            39 => ERR_NO_MEM,
            40 => ERR_NOT_SAME,
            41 => ERR_NO_SPACE,
            42 => ERR_NO_SUCH_FILE,
            43 => ERR_PORT,
            44 => ERR_QUOTA,
            45 => ERR_READ_ONLY,
            46 => ERR_RMA_ATTACH,
            47 => ERR_RMA_CONFLICT,
            48 => ERR_RMA_RANGE,
            49 => ERR_RMA_SHARED,
            50 => ERR_RMA_SYNC,
            51 => ERR_SERVICE,
            52 => ERR_SIZE,
            53 => ERR_SPAWN,
            54 => ERR_UNSUPPORTED_DATAREP,
            55 => ERR_UNSUPPORTED_OPERATION,
            56 => ERR_WIN,
            57 => ERR_RMA_FLAVOR,
            59 => ERR_VALUE_TOO_LARGE,
            60 => ERR_SESSION,
            61 => ERR_ERRHANDLER,
            62 => ERR_ABI,
            _ => ERR_OTHER,
        }
    }

    fn handles(_: &Loaded) -> Result<Handles<usize>> {
        Ok(Handles {
            comm_world: 0x101,
            comm_self: 0x102,
            comm_null: 0x100,
            request_null: 0x180,
            message_null: 0x128,
            errors_return: 0x143,
            info_null: 0x130,
            byte: 0x247,
            int: 0x209,
            ops: Ops {
                sum: 0x21,
                min: 0x22,
                max: 0x23,
                prod: 0x24,
                band: 0x28,
                bor: 0x29,
                bxor: 0x2a,
                land: 0x30,
                lor: 0x31,
                lxor: 0x32,
                minloc: 0x38,
                maxloc: 0x39,
            },
            types: Types {
                int8: 0x240,
                uint8: 0x241,
                int16: 0x248,
                uint16: 0x249,
                int32: 0x250,
                uint32: 0x251,
                int64: 0x258,
                uint64: 0x259,
                float: 0x210,
                double: 0x214,
                long_double: 0x220,
                c_bool: 0x238,
                c_float_complex: 0x212,
                c_double_complex: 0x216,
                c_long_double_complex: 0x224,
                float_int: 0x228,
                double_int: 0x229,
                long_int: 0x22a,
                two_int: 0x22b,
                short_int: 0x22c,
                long_double_int: 0x22d,
            },
        })
    }
}

/// `MPI_IN_PLACE` of ABI `A` as a pointer.
pub(crate) fn in_place<A: Abi>() -> *mut c_void {
    A::IN_PLACE as *mut c_void
}

/// Checks a status layout's size against its header (a mistake here would
/// let the library write past our status buffers).
const _: () = {
    assert!(std::mem::size_of::<MpichStatus>() == 20);
    assert!(std::mem::size_of::<OmpiStatus>() == 8 + 8 + std::mem::size_of::<usize>());
    assert!(std::mem::size_of::<StandardStatus>() == 32);
};

/// A buffer address as passed to the library. The dangling address of an
/// empty Rust buffer (1 for bytes) is `MPI_IN_PLACE` in the standard and
/// Open MPI ABIs, which would make the library read the receive buffer
/// instead: such an address (never that of real memory) goes as null.
#[inline]
pub(crate) fn lib_buf<A: Abi, T>(p: *const T) -> *mut c_void {
    if p as usize == A::IN_PLACE {
        std::ptr::null_mut()
    } else {
        p.cast_mut().cast()
    }
}
