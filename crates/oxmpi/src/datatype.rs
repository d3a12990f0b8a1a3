//! Datatypes (MPI-4.1 chapter 5). The runtime moves bytes; a datatype tells
//! reductions how to read them and users how many elements a message holds.
//! Predefined types only for now; derived types extend [`Datatype`].

/// The element kinds the reduction kernels know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Basic {
    /// Raw bytes (MPI_BYTE, MPI_PACKED): no arithmetic.
    Byte,
    /// C char (MPI_CHAR): no arithmetic.
    Char,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
    /// x87 80-bit long double stored in 16 bytes: moved, not reduced.
    LongDouble,
    /// C `bool` / `_Bool`.
    Bool,
    /// Complex of two f32.
    C32,
    /// Complex of two f64.
    C64,
    /// Half precision (IEEE binary16): moved, not reduced.
    F16,
    /// Pair types for MAXLOC/MINLOC: value then C `int` index.
    FloatInt,
    DoubleInt,
    LongInt,
    TwoInt,
    ShortInt,
    LongDoubleInt,
    /// Complex of two x87 long doubles (32 bytes).
    LongDoubleComplex,
}

impl Basic {
    /// Size in bytes of one element (with C struct padding for pair types).
    pub const fn size(self) -> usize {
        use Basic::*;
        match self {
            Byte | Char | I8 | U8 | Bool => 1,
            I16 | U16 | F16 => 2,
            I32 | U32 | F32 => 4,
            I64 | U64 | F64 | C32 | FloatInt | TwoInt => 8,
            ShortInt => 8,
            LongDouble | C64 | DoubleInt | LongInt => 16,
            LongDoubleInt | LongDoubleComplex => 32,
        }
    }
}

/// A datatype: for now a predefined basic type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datatype {
    pub basic: Basic,
}

impl Datatype {
    pub const fn new(basic: Basic) -> Datatype {
        Datatype { basic }
    }

    /// Size in bytes of one element.
    pub fn size(&self) -> usize {
        self.basic.size()
    }
}
