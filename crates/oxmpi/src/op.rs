//! Reduction operations (MPI-4.1 §6.9): the predefined kernels and user
//! functions.
//!
//! Every kernel computes `inout[i] = in[i] op inout[i]`, where `in` holds
//! the partial result of the lower ranks. Kernels work element by element,
//! and an element-wise IEEE operation gives the same bits whether the
//! compiler vectorises the loop or not, so a reduction's bits depend only
//! on the order in which the collective combines its operands; the
//! algorithms in `coll` fix that order (see there), which is what makes
//! floating-point reductions reproducible across ranks and runs.
//!
//! Which operation applies to which datatype follows the table of MPI-4.1
//! §6.9.2: MAX/MIN on integers and floating point; SUM/PROD also on
//! complex; LAND/LOR/LXOR on integers and logicals; BAND/BOR/BXOR on
//! integers and bytes; MAXLOC/MINLOC on the pair types. REPLACE and NO_OP
//! (defined for one-sided accumulate) apply to any type. [`Op::check`]
//! rejects the other combinations before any data moves, so every rank
//! fails alike instead of some waiting for a partner that gave up.

use std::cmp::Ordering;
use std::sync::Arc;

use crate::datatype::{Basic, Datatype};
use crate::error::{Error, Result};

/// The predefined operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Predefined {
    Max,
    Min,
    Sum,
    Prod,
    Land,
    Band,
    Lor,
    Bor,
    Lxor,
    Bxor,
    MaxLoc,
    MinLoc,
    Replace,
    NoOp,
}

/// A user function: `f(in, inout, count, dtype)` computes
/// `inout = in op inout` over `count` elements.
pub type UserFn = dyn Fn(&[u8], &mut [u8], usize, &Datatype) -> Result<()> + Send + Sync;

/// A reduction operation.
#[derive(Clone)]
pub enum Op {
    Predefined(Predefined),
    User { f: Arc<UserFn>, commute: bool },
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Predefined(p) => write!(f, "{p:?}"),
            Op::User { commute, .. } => write!(f, "User(commute={commute})"),
        }
    }
}

/// The groups of basic datatypes of MPI-4.1 §6.9.2.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Integer,
    Floating,
    Complex,
    Logical,
    Byte,
    Pair,
}

fn group(b: Basic) -> Group {
    use Basic::*;
    match b {
        Char | I8 | U8 | I16 | U16 | I32 | U32 | I64 | U64 => Group::Integer,
        F16 | F32 | F64 | LongDouble => Group::Floating,
        C32 | C64 | LongDoubleComplex => Group::Complex,
        Bool => Group::Logical,
        Byte => Group::Byte,
        FloatInt | DoubleInt | LongInt | TwoInt | ShortInt | LongDoubleInt => Group::Pair,
    }
}

fn allowed(p: Predefined, g: Group) -> bool {
    use Predefined::*;
    match p {
        Max | Min => matches!(g, Group::Integer | Group::Floating),
        Sum | Prod => matches!(g, Group::Integer | Group::Floating | Group::Complex),
        Land | Lor | Lxor => matches!(g, Group::Integer | Group::Logical),
        Band | Bor | Bxor => matches!(g, Group::Integer | Group::Byte),
        MaxLoc | MinLoc => g == Group::Pair,
        Replace | NoOp => true,
    }
}

impl Op {
    pub fn is_commutative(&self) -> bool {
        match self {
            Op::Predefined(_) => true,
            Op::User { commute, .. } => *commute,
        }
    }

    /// Checks that the operation is defined on `dtype`, before any data
    /// moves.
    pub fn check(&self, dtype: &Datatype) -> Result<()> {
        match self {
            Op::User { .. } => Ok(()),
            Op::Predefined(p) => {
                if !allowed(*p, group(dtype.basic)) {
                    return Err(Error::Op(format!(
                        "{p:?} is not defined for datatype {:?}",
                        dtype.basic
                    )));
                }
                if dtype.basic.is_x87() && !cfg!(target_arch = "x86_64") {
                    return Err(Error::NotImplemented(format!(
                        "reductions on {:?} on this architecture",
                        dtype.basic
                    )));
                }
                Ok(())
            }
        }
    }

    /// `inout = in op inout` over `count` elements of `dtype`.
    pub fn apply(
        &self,
        input: &[u8],
        inout: &mut [u8],
        count: usize,
        dtype: &Datatype,
    ) -> Result<()> {
        let n = count * dtype.size();
        if input.len() < n || inout.len() < n {
            return Err(Error::Buffer(format!(
                "reduction buffers hold {} and {} bytes, need {n}",
                input.len(),
                inout.len()
            )));
        }
        match self {
            Op::User { f, .. } => f(&input[..n], &mut inout[..n], count, dtype),
            Op::Predefined(p) => {
                self.check(dtype)?;
                apply_predefined(*p, dtype.basic, &input[..n], &mut inout[..n]);
                Ok(())
            }
        }
    }
}

impl Basic {
    /// Stored as x87 80-bit extended precision (C `long double` on x86).
    fn is_x87(self) -> bool {
        matches!(
            self,
            Basic::LongDouble | Basic::LongDoubleComplex | Basic::LongDoubleInt
        )
    }
}

/// Applies `f(in, inout)` element-wise over two byte slices of equal length
/// holding values of type `T`.
#[inline(always)]
fn zip<T: Copy>(input: &[u8], inout: &mut [u8], f: impl Fn(T, T) -> T) {
    let w = std::mem::size_of::<T>();
    let n = input.len().min(inout.len()) / w;
    let align = std::mem::align_of::<T>();
    if (input.as_ptr() as usize).is_multiple_of(align)
        && (inout.as_ptr() as usize).is_multiple_of(align)
    {
        // SAFETY: both slices hold at least `n` values of `T`, a plain
        // numeric type valid for any bit pattern, and are aligned for it
        // (checked above); `inout` is the only mutable view of its memory
        // and cannot overlap `input` (a shared and a mutable borrow).
        let (xs, ys) = unsafe {
            (
                std::slice::from_raw_parts(input.as_ptr().cast::<T>(), n),
                std::slice::from_raw_parts_mut(inout.as_mut_ptr().cast::<T>(), n),
            )
        };
        for (y, &x) in ys.iter_mut().zip(xs) {
            *y = f(x, *y);
        }
    } else {
        let (ip, op) = (input.as_ptr().cast::<T>(), inout.as_mut_ptr().cast::<T>());
        for i in 0..n {
            // SAFETY: element `i < n` lies inside both slices; the accesses
            // are unaligned ones, valid at any address.
            unsafe {
                let x = ip.add(i).read_unaligned();
                let y = op.add(i).read_unaligned();
                op.add(i).write_unaligned(f(x, y));
            }
        }
    }
}

macro_rules! integer {
    ($p:expr, $t:ty, $input:expr, $inout:expr) => {
        match $p {
            Predefined::Sum => zip::<$t>($input, $inout, |a, b| a.wrapping_add(b)),
            Predefined::Prod => zip::<$t>($input, $inout, |a, b| a.wrapping_mul(b)),
            Predefined::Max => zip::<$t>($input, $inout, |a, b| if a > b { a } else { b }),
            Predefined::Min => zip::<$t>($input, $inout, |a, b| if a < b { a } else { b }),
            Predefined::Band => zip::<$t>($input, $inout, |a, b| a & b),
            Predefined::Bor => zip::<$t>($input, $inout, |a, b| a | b),
            Predefined::Bxor => zip::<$t>($input, $inout, |a, b| a ^ b),
            Predefined::Land => zip::<$t>($input, $inout, |a, b| ((a != 0) & (b != 0)) as $t),
            Predefined::Lor => zip::<$t>($input, $inout, |a, b| ((a != 0) | (b != 0)) as $t),
            Predefined::Lxor => zip::<$t>($input, $inout, |a, b| ((a != 0) ^ (b != 0)) as $t),
            _ => unreachable!("rejected by Op::check"),
        }
    };
}

macro_rules! floating {
    ($p:expr, $t:ty, $input:expr, $inout:expr) => {
        match $p {
            Predefined::Sum => zip::<$t>($input, $inout, |a, b| a + b),
            Predefined::Prod => zip::<$t>($input, $inout, |a, b| a * b),
            Predefined::Max => zip::<$t>($input, $inout, |a, b| if a > b { a } else { b }),
            Predefined::Min => zip::<$t>($input, $inout, |a, b| if a < b { a } else { b }),
            _ => unreachable!("rejected by Op::check"),
        }
    };
}

/// Complex SUM and PROD on `(re, im)` pairs of `f32` or `f64`.
fn complex<F>(p: Predefined, input: &[u8], inout: &mut [u8])
where
    F: Copy + std::ops::Add<Output = F> + std::ops::Sub<Output = F> + std::ops::Mul<Output = F>,
{
    zip::<[F; 2]>(input, inout, |[ar, ai], [br, bi]| match p {
        Predefined::Sum => [ar + br, ai + bi],
        _ => [ar * br - ai * bi, ar * bi + ai * br],
    })
}

/// MAXLOC / MINLOC on `(value, int index)` pairs of `stride` bytes with
/// the index at `idx_off` (MPI-4.1 §6.9.4): the better value wins; on a tie
/// the smaller index. A NaN compares neither better nor equal, so the
/// `inout` operand stays.
fn loc(
    p: Predefined,
    input: &[u8],
    inout: &mut [u8],
    stride: usize,
    idx_off: usize,
    cmp: impl Fn(&[u8], &[u8]) -> Option<Ordering>,
) {
    let idx = |b: &[u8]| i32::from_ne_bytes(b[idx_off..idx_off + 4].try_into().expect("4 bytes"));
    for (i, o) in input
        .chunks_exact(stride)
        .zip(inout.chunks_exact_mut(stride))
    {
        let better = if p == Predefined::MaxLoc {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        let take_in = match cmp(i, o) {
            Some(Ordering::Equal) => idx(i) < idx(o),
            Some(ord) => ord == better,
            None => false,
        };
        if take_in {
            o.copy_from_slice(i);
        }
    }
}

fn ne<T: Copy, const N: usize>(b: &[u8], from: fn([u8; N]) -> T) -> T {
    from(b[..N].try_into().expect("N bytes"))
}

fn apply_predefined(p: Predefined, basic: Basic, input: &[u8], inout: &mut [u8]) {
    use Basic::*;
    match p {
        Predefined::NoOp => return,
        Predefined::Replace => {
            inout.copy_from_slice(input);
            return;
        }
        _ => {}
    }
    match basic {
        I8 | Char => integer!(p, i8, input, inout),
        U8 | Byte => integer!(p, u8, input, inout),
        I16 => integer!(p, i16, input, inout),
        U16 => integer!(p, u16, input, inout),
        I32 => integer!(p, i32, input, inout),
        U32 => integer!(p, u32, input, inout),
        I64 => integer!(p, i64, input, inout),
        U64 => integer!(p, u64, input, inout),
        F32 => floating!(p, f32, input, inout),
        F64 => floating!(p, f64, input, inout),
        F16 => half::apply(p, input, inout),
        LongDouble => x87::apply(p, input, inout),
        Bool => match p {
            Predefined::Land => zip::<u8>(input, inout, |a, b| ((a != 0) & (b != 0)) as u8),
            Predefined::Lor => zip::<u8>(input, inout, |a, b| ((a != 0) | (b != 0)) as u8),
            _ => zip::<u8>(input, inout, |a, b| ((a != 0) ^ (b != 0)) as u8),
        },
        C32 => complex::<f32>(p, input, inout),
        C64 => complex::<f64>(p, input, inout),
        LongDoubleComplex => x87::apply_complex(p, input, inout),
        FloatInt => loc(p, input, inout, 8, 4, |a, b| {
            ne(a, f32::from_ne_bytes).partial_cmp(&ne(b, f32::from_ne_bytes))
        }),
        DoubleInt => loc(p, input, inout, 16, 8, |a, b| {
            ne(a, f64::from_ne_bytes).partial_cmp(&ne(b, f64::from_ne_bytes))
        }),
        LongInt => loc(p, input, inout, 16, 8, |a, b| {
            Some(ne(a, i64::from_ne_bytes).cmp(&ne(b, i64::from_ne_bytes)))
        }),
        TwoInt => loc(p, input, inout, 8, 4, |a, b| {
            Some(ne(a, i32::from_ne_bytes).cmp(&ne(b, i32::from_ne_bytes)))
        }),
        ShortInt => loc(p, input, inout, 8, 4, |a, b| {
            Some(ne(a, i16::from_ne_bytes).cmp(&ne(b, i16::from_ne_bytes)))
        }),
        LongDoubleInt => loc(p, input, inout, 32, 16, x87::compare),
    }
}

/// IEEE binary16 (MPI_SHORT_FLOAT): computed in `f32` and rounded back.
/// One f32 operation followed by rounding to binary16 is correctly rounded
/// (f32 carries more than 2·11+2 significand bits, so the double rounding
/// is innocuous), so results equal native half-precision arithmetic.
mod half {
    use super::{zip, Predefined};

    pub(super) fn apply(p: Predefined, input: &[u8], inout: &mut [u8]) {
        zip::<u16>(input, inout, |a, b| {
            let (x, y) = (to_f32(a), to_f32(b));
            match p {
                Predefined::Sum => from_f32(x + y),
                Predefined::Prod => from_f32(x * y),
                Predefined::Max => {
                    if x > y {
                        a
                    } else {
                        b
                    }
                }
                _ => {
                    if x < y {
                        a
                    } else {
                        b
                    }
                }
            }
        })
    }

    pub(super) fn to_f32(h: u16) -> f32 {
        let sign = ((h as u32) & 0x8000) << 16;
        let exp = ((h >> 10) & 0x1f) as u32;
        let man = (h & 0x3ff) as u32;
        let bits = match exp {
            0 if man == 0 => sign,
            0 => {
                // Subnormal: value = man * 2^-24, exact in f32.
                let v = man as f32 * f32::from_bits(0x3380_0000); // 2^-24
                return if sign != 0 { -v } else { v };
            }
            0x1f => sign | 0x7f80_0000 | (man << 13),
            _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
        };
        f32::from_bits(bits)
    }

    /// Rounds to nearest, ties to even.
    pub(super) fn from_f32(f: f32) -> u16 {
        let bits = f.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        let exp = ((bits >> 23) & 0xff) as i32;
        let man = bits & 0x7f_ffff;
        if exp == 0xff {
            // Infinity or NaN (keep NaNs quiet and non-zero).
            let nan = if man != 0 {
                0x200 | (man >> 13) as u16
            } else {
                0
            };
            return sign | 0x7c00 | nan;
        }
        let e = exp - 127 + 15;
        if e >= 0x1f {
            return sign | 0x7c00;
        }
        if e <= 0 {
            // Subnormal or zero in binary16.
            if e < -10 {
                return sign;
            }
            let m = man | 0x80_0000;
            let shift = (14 - e) as u32;
            let half = m >> shift;
            let rem = m & ((1 << shift) - 1);
            let mid = 1 << (shift - 1);
            let round = rem > mid || (rem == mid && half & 1 == 1);
            return sign | (half + round as u32) as u16;
        }
        let half = ((e as u32) << 10) | (man >> 13);
        let rem = man & 0x1fff;
        let round = rem > 0x1000 || (rem == 0x1000 && half & 1 == 1);
        // A carry out of the significand correctly bumps the exponent (and
        // may reach infinity).
        sign | (half + round as u32) as u16
    }
}

/// x87 80-bit extended precision (C `long double` on x86-64), stored in 16
/// bytes. Rust has no such type, so the arithmetic runs on the x87 unit.
#[cfg(target_arch = "x86_64")]
mod x87 {
    use std::arch::asm;
    use std::cmp::Ordering;

    use super::Predefined;

    const W: usize = 16;

    /// `out = a + b` (or `a * b`), each an 80-bit value at its pointer.
    fn arith(mul: bool, a: &[u8], b: &[u8], out: &mut [u8]) {
        assert!(a.len() >= 10 && b.len() >= 10 && out.len() >= 10);
        // SAFETY: each pointer addresses at least 10 readable (a, b) or
        // writable (out) bytes, checked above; the asm touches only those
        // bytes and the x87 stack, which it leaves empty (both loads are
        // popped), and declares the registers it clobbers.
        unsafe {
            if mul {
                asm!(
                    "fld tbyte ptr [{a}]",
                    "fld tbyte ptr [{b}]",
                    "fmulp",
                    "fstp tbyte ptr [{o}]",
                    a = in(reg) a.as_ptr(),
                    b = in(reg) b.as_ptr(),
                    o = in(reg) out.as_mut_ptr(),
                    out("st(0)") _, out("st(1)") _,
                    options(nostack),
                );
            } else {
                asm!(
                    "fld tbyte ptr [{a}]",
                    "fld tbyte ptr [{b}]",
                    "faddp",
                    "fstp tbyte ptr [{o}]",
                    a = in(reg) a.as_ptr(),
                    b = in(reg) b.as_ptr(),
                    o = in(reg) out.as_mut_ptr(),
                    out("st(0)") _, out("st(1)") _,
                    options(nostack),
                );
            }
        }
    }

    /// `out = a*b - c*d`, or `a*b + c*d` with `plus`: the complex product's
    /// parts, each product and the final sum rounded to 80 bits.
    fn cross(plus: bool, a: &[u8], b: &[u8], c: &[u8], d: &[u8], out: &mut [u8]) {
        assert!([a.len(), b.len(), c.len(), d.len(), out.len()]
            .iter()
            .all(|&l| l >= 10));
        let neg: u32 = (!plus) as u32;
        // SAFETY: as in `arith`: every pointer covers 10 valid bytes; the
        // asm leaves the x87 stack empty and declares its clobbers. The
        // subtraction is a negation (`fchs`) and an addition, which avoids
        // the reversed-operand forms of fsub in Intel syntax.
        unsafe {
            asm!(
                "fld tbyte ptr [{a}]",
                "fld tbyte ptr [{b}]",
                "fmulp",
                "fld tbyte ptr [{c}]",
                "fld tbyte ptr [{d}]",
                "fmulp",
                "test {neg:e}, {neg:e}",
                "jz 2f",
                "fchs",
                "2:",
                "faddp",
                "fstp tbyte ptr [{o}]",
                a = in(reg) a.as_ptr(),
                b = in(reg) b.as_ptr(),
                c = in(reg) c.as_ptr(),
                d = in(reg) d.as_ptr(),
                o = in(reg) out.as_mut_ptr(),
                neg = in(reg) neg,
                out("st(0)") _, out("st(1)") _,
                options(nostack),
            );
        }
    }

    /// IEEE comparison of two 80-bit values (None when unordered).
    pub(super) fn compare(a: &[u8], b: &[u8]) -> Option<Ordering> {
        assert!(a.len() >= 10 && b.len() >= 10);
        let (above, below, unordered): (u8, u8, u8);
        // SAFETY: both pointers cover 10 readable bytes; fucomip pops one
        // value and fstp the other, leaving the x87 stack empty.
        unsafe {
            asm!(
                "fld tbyte ptr [{b}]",
                "fld tbyte ptr [{a}]",
                "fucomip st, st(1)",
                "fstp st(0)",
                "seta {above}",
                "setb {below}",
                "setp {unordered}",
                a = in(reg) a.as_ptr(),
                b = in(reg) b.as_ptr(),
                above = out(reg_byte) above,
                below = out(reg_byte) below,
                unordered = out(reg_byte) unordered,
                out("st(0)") _, out("st(1)") _,
                options(nostack),
            );
        }
        if unordered != 0 {
            None
        } else if above != 0 {
            Some(Ordering::Greater)
        } else if below != 0 {
            Some(Ordering::Less)
        } else {
            Some(Ordering::Equal)
        }
    }

    pub(super) fn apply(p: Predefined, input: &[u8], inout: &mut [u8]) {
        let mut tmp = [0u8; W];
        for (i, o) in input.chunks_exact(W).zip(inout.chunks_exact_mut(W)) {
            match p {
                Predefined::Sum | Predefined::Prod => {
                    tmp.copy_from_slice(o);
                    arith(p == Predefined::Prod, i, &tmp, o);
                }
                Predefined::Max => {
                    if compare(i, o) == Some(Ordering::Greater) {
                        o.copy_from_slice(i);
                    }
                }
                _ => {
                    if compare(i, o) == Some(Ordering::Less) {
                        o.copy_from_slice(i);
                    }
                }
            }
        }
    }

    pub(super) fn apply_complex(p: Predefined, input: &[u8], inout: &mut [u8]) {
        for (i, o) in input.chunks_exact(2 * W).zip(inout.chunks_exact_mut(2 * W)) {
            let mut b = [0u8; 2 * W];
            b.copy_from_slice(o);
            let (ar, ai) = i.split_at(W);
            let (br, bi) = b.split_at(W);
            let (or, oi) = o.split_at_mut(W);
            if p == Predefined::Sum {
                arith(false, ar, br, or);
                arith(false, ai, bi, oi);
            } else {
                cross(false, ar, br, ai, bi, or);
                cross(true, ar, bi, ai, br, oi);
            }
        }
    }
}

/// Without an x87 unit, `Op::check` refuses long double reductions before
/// they reach these.
#[cfg(not(target_arch = "x86_64"))]
mod x87 {
    use super::Predefined;
    use std::cmp::Ordering;

    pub(super) fn compare(_: &[u8], _: &[u8]) -> Option<Ordering> {
        unreachable!("rejected by Op::check")
    }
    pub(super) fn apply(_: Predefined, _: &[u8], _: &mut [u8]) {
        unreachable!("rejected by Op::check")
    }
    pub(super) fn apply_complex(_: Predefined, _: &[u8], _: &mut [u8]) {
        unreachable!("rejected by Op::check")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Copy>(v: &[T]) -> Vec<u8> {
        // SAFETY: reading plain-old-data values as bytes.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
            .to_vec()
    }

    fn run(p: Predefined, b: Basic, input: &[u8], inout: &mut [u8]) -> Result<()> {
        let dt = Datatype::new(b);
        Op::Predefined(p).apply(input, inout, input.len() / dt.size(), &dt)
    }

    #[test]
    fn sum_and_max_f64() {
        let a = bytes(&[1.0f64, 5.0]);
        let mut b = bytes(&[2.0f64, 3.0]);
        run(Predefined::Sum, Basic::F64, &a, &mut b).unwrap();
        assert_eq!(b, bytes(&[3.0f64, 8.0]));
        run(Predefined::Max, Basic::F64, &a, &mut b).unwrap();
        assert_eq!(b, bytes(&[3.0f64, 8.0]));
    }

    #[test]
    fn unaligned_buffers_give_the_same_result() {
        let a = bytes(&[1i32, -7, 9, 4]);
        let b = bytes(&[2i32, 3, -9, 4]);
        let mut aligned = b.clone();
        run(Predefined::Prod, Basic::I32, &a, &mut aligned).unwrap();
        let mut ua = vec![0u8; a.len() + 1];
        ua[1..].copy_from_slice(&a);
        let mut ub = vec![0u8; b.len() + 1];
        ub[1..].copy_from_slice(&b);
        run(Predefined::Prod, Basic::I32, &ua[1..], &mut ub[1..]).unwrap();
        assert_eq!(&ub[1..], &aligned[..]);
        assert_eq!(aligned, bytes(&[2i32, -21, -81, 16]));
    }

    #[test]
    fn maxloc_ties_take_smaller_index() {
        let a = bytes(&[7i32, 3]);
        let mut b = bytes(&[7i32, 1]);
        run(Predefined::MaxLoc, Basic::TwoInt, &a, &mut b).unwrap();
        assert_eq!(b, bytes(&[7i32, 1]));
        let a = bytes(&[9i32, 5]);
        run(Predefined::MaxLoc, Basic::TwoInt, &a, &mut b).unwrap();
        assert_eq!(b, bytes(&[9i32, 5]));
        run(
            Predefined::MinLoc,
            Basic::TwoInt,
            &bytes(&[1i32, 8]),
            &mut b,
        )
        .unwrap();
        assert_eq!(b, bytes(&[1i32, 8]));
    }

    #[test]
    fn the_table_of_6_9_2_is_enforced() {
        let f = bytes(&[1.0f32]);
        let mut g = f.clone();
        for p in [Predefined::Bxor, Predefined::Land, Predefined::MaxLoc] {
            let e = run(p, Basic::F32, &f, &mut g).unwrap_err();
            assert!(matches!(e, Error::Op(_)), "{p:?} on float: {e}");
        }
        let c = bytes(&[1.0f64, 2.0]);
        let mut d = c.clone();
        assert!(run(Predefined::Max, Basic::C64, &c, &mut d).is_err());
        let mut t = vec![1u8];
        assert!(run(Predefined::Sum, Basic::Bool, &[1], &mut t).is_err());
        assert!(run(Predefined::Sum, Basic::Byte, &[1], &mut t).is_err());
        run(Predefined::Bor, Basic::Byte, &[2], &mut t).unwrap();
        assert_eq!(t, [3]);
        run(Predefined::Replace, Basic::C64, &c, &mut d).unwrap();
    }

    #[test]
    fn complex_product() {
        let a = bytes(&[1.0f64, 2.0]);
        let mut b = bytes(&[3.0f64, -1.0]);
        run(Predefined::Prod, Basic::C64, &a, &mut b).unwrap();
        assert_eq!(b, bytes(&[5.0f64, 5.0]));
    }

    #[test]
    fn half_precision_round_trips_and_rounds_to_even() {
        for h in 0u16..=0xffff {
            let f = half::to_f32(h);
            if f.is_nan() {
                assert!(half::to_f32(half::from_f32(f)).is_nan());
            } else {
                assert_eq!(half::from_f32(f), h, "{h:#06x}");
            }
        }
        // 1 + 2^-11 is half-way between 1 and the next half: ties to even.
        assert_eq!(half::from_f32(1.0 + f32::powi(2.0, -11)), 0x3c00);
        assert_eq!(half::from_f32(65520.0), 0x7c00);
        let a = bytes(&[0x3c00u16, 0x4000]); // 1, 2
        let mut b = bytes(&[0x4000u16, 0x4200]); // 2, 3
        run(Predefined::Sum, Basic::F16, &a, &mut b).unwrap();
        assert_eq!(b, bytes(&[0x4200u16, 0x4500])); // 3, 5
    }

    #[cfg(target_arch = "x86_64")]
    fn ld(v: f64) -> [u8; 16] {
        // An f64 converted by the x87 unit to 80 bits.
        let mut out = [0u8; 16];
        // SAFETY: reads 8 bytes of `v`, writes 10 bytes of `out`; the x87
        // stack is left empty.
        unsafe {
            std::arch::asm!(
                "fld qword ptr [{v}]",
                "fstp tbyte ptr [{o}]",
                v = in(reg) &v,
                o = in(reg) out.as_mut_ptr(),
                out("st(0)") _,
                options(nostack),
            );
        }
        out
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn long_double_arithmetic_and_comparison() {
        let a: Vec<u8> = [ld(1.5), ld(-2.0)].concat();
        let mut b: Vec<u8> = [ld(2.25), ld(4.0)].concat();
        run(Predefined::Sum, Basic::LongDouble, &a, &mut b).unwrap();
        assert_eq!(&b[..10], &ld(3.75)[..10]);
        assert_eq!(&b[16..26], &ld(2.0)[..10]);
        run(Predefined::Prod, Basic::LongDouble, &a, &mut b).unwrap();
        assert_eq!(&b[..10], &ld(5.625)[..10]);
        assert_eq!(&b[16..26], &ld(-4.0)[..10]);
        run(Predefined::Min, Basic::LongDouble, &a, &mut b).unwrap();
        assert_eq!(&b[..10], &ld(1.5)[..10]);
        assert_eq!(&b[16..26], &ld(-4.0)[..10]);
        // (1 + 2i)(3 - i) = 5 + 5i
        let c: Vec<u8> = [ld(1.0), ld(2.0)].concat();
        let mut d: Vec<u8> = [ld(3.0), ld(-1.0)].concat();
        run(Predefined::Prod, Basic::LongDoubleComplex, &c, &mut d).unwrap();
        assert_eq!(&d[..10], &ld(5.0)[..10]);
        assert_eq!(&d[16..26], &ld(5.0)[..10]);
        assert_eq!(x87::compare(&ld(f64::NAN), &ld(1.0)), None);
        assert_eq!(x87::compare(&ld(-1.0), &ld(1.0)), Some(Ordering::Less));
    }
}
