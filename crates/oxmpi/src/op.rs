//! Reduction operations (MPI-4.1 §6.9): the predefined kernels and user
//! functions. Every kernel computes `inout[i] = in[i] op inout[i]`, where
//! `in` holds the lower ranks' partial result; reduction trees call it in a
//! fixed order so floating-point results are the same on every rank and in
//! every run.

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

/// A user function: `f(in, inout, count, dtype)`.
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

impl Op {
    pub fn is_commutative(&self) -> bool {
        match self {
            Op::Predefined(_) => true,
            Op::User { commute, .. } => *commute,
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
            Op::Predefined(p) => apply_predefined(*p, dtype.basic, &input[..n], &mut inout[..n]),
        }
    }
}

macro_rules! fold {
    ($t:ty, $input:expr, $inout:expr, |$a:ident, $b:ident| $e:expr) => {{
        const W: usize = std::mem::size_of::<$t>();
        let (input, inout): (&[u8], &mut [u8]) = ($input, $inout);
        let n = input.len() / W;
        let aligned = (input.as_ptr() as usize) % std::mem::align_of::<$t>() == 0
            && (inout.as_ptr() as usize) % std::mem::align_of::<$t>() == 0;
        if aligned {
            // SAFETY: both slices hold `n` elements of a plain numeric type
            // and are suitably aligned (checked above); `inout` is the only
            // mutable view of its memory.
            let (xs, ys) = unsafe {
                (
                    std::slice::from_raw_parts(input.as_ptr().cast::<$t>(), n),
                    std::slice::from_raw_parts_mut(inout.as_mut_ptr().cast::<$t>(), n),
                )
            };
            for (y, &$a) in ys.iter_mut().zip(xs) {
                let $b = *y;
                *y = $e;
            }
        } else {
            for (i, o) in input.chunks_exact(W).zip(inout.chunks_exact_mut(W)) {
                let $a = <$t>::from_ne_bytes(i.try_into().unwrap());
                let $b = <$t>::from_ne_bytes((&*o).try_into().unwrap());
                o.copy_from_slice(&($e).to_ne_bytes());
            }
        }
    }};
}

macro_rules! arith {
    ($p:expr, $t:ty, $input:expr, $inout:expr, int) => {
        match $p {
            Predefined::Sum => fold!($t, $input, $inout, |a, b| a.wrapping_add(b)),
            Predefined::Prod => fold!($t, $input, $inout, |a, b| a.wrapping_mul(b)),
            Predefined::Max => fold!($t, $input, $inout, |a, b| if a > b { a } else { b }),
            Predefined::Min => fold!($t, $input, $inout, |a, b| if a < b { a } else { b }),
            Predefined::Band => fold!($t, $input, $inout, |a, b| a & b),
            Predefined::Bor => fold!($t, $input, $inout, |a, b| a | b),
            Predefined::Bxor => fold!($t, $input, $inout, |a, b| a ^ b),
            Predefined::Land => fold!($t, $input, $inout, |a, b| ((a != 0) && (b != 0)) as $t),
            Predefined::Lor => fold!($t, $input, $inout, |a, b| ((a != 0) || (b != 0)) as $t),
            Predefined::Lxor => fold!($t, $input, $inout, |a, b| ((a != 0) != (b != 0)) as $t),
            _ => return Err(unsupported($p, stringify!($t))),
        }
    };
    ($p:expr, $t:ty, $input:expr, $inout:expr, float) => {
        match $p {
            Predefined::Sum => fold!($t, $input, $inout, |a, b| a + b),
            Predefined::Prod => fold!($t, $input, $inout, |a, b| a * b),
            Predefined::Max => fold!($t, $input, $inout, |a, b| if a > b { a } else { b }),
            Predefined::Min => fold!($t, $input, $inout, |a, b| if a < b { a } else { b }),
            Predefined::Land => fold!($t, $input, $inout, |a, b| ((a != 0.0) && (b != 0.0)) as u8
                as $t),
            Predefined::Lor => fold!($t, $input, $inout, |a, b| ((a != 0.0) || (b != 0.0)) as u8
                as $t),
            Predefined::Lxor => fold!($t, $input, $inout, |a, b| ((a != 0.0) != (b != 0.0)) as u8
                as $t),
            _ => return Err(unsupported($p, stringify!($t))),
        }
    };
}

fn unsupported(p: Predefined, ty: &str) -> Error {
    Error::Op(format!("{p:?} is not defined for {ty}"))
}

fn complex<T>(p: Predefined, input: &[u8], inout: &mut [u8]) -> Result<()>
where
    T: Copy
        + std::ops::Add<Output = T>
        + std::ops::Sub<Output = T>
        + std::ops::Mul<Output = T>
        + FromNe,
{
    let w = T::WIDTH;
    for (i, o) in input.chunks_exact(2 * w).zip(inout.chunks_exact_mut(2 * w)) {
        let (ar, ai) = (T::from_ne(&i[..w]), T::from_ne(&i[w..]));
        let (br, bi) = (T::from_ne(&o[..w]), T::from_ne(&o[w..]));
        let (r, im) = match p {
            Predefined::Sum => (ar + br, ai + bi),
            Predefined::Prod => (ar * br - ai * bi, ar * bi + ai * br),
            _ => return Err(unsupported(p, "complex")),
        };
        r.to_ne(&mut o[..w]);
        im.to_ne(&mut o[w..]);
    }
    Ok(())
}

/// Byte conversions for the complex kernel.
trait FromNe: Sized {
    const WIDTH: usize;
    fn from_ne(b: &[u8]) -> Self;
    fn to_ne(self, b: &mut [u8]);
}
impl FromNe for f32 {
    const WIDTH: usize = 4;
    fn from_ne(b: &[u8]) -> Self {
        f32::from_ne_bytes(b.try_into().unwrap())
    }
    fn to_ne(self, b: &mut [u8]) {
        b.copy_from_slice(&self.to_ne_bytes())
    }
}
impl FromNe for f64 {
    const WIDTH: usize = 8;
    fn from_ne(b: &[u8]) -> Self {
        f64::from_ne_bytes(b.try_into().unwrap())
    }
    fn to_ne(self, b: &mut [u8]) {
        b.copy_from_slice(&self.to_ne_bytes())
    }
}

/// MAXLOC / MINLOC on (value, int index) pairs: the better value wins; on a
/// tie the smaller index.
fn loc<T: PartialOrd + Copy>(
    p: Predefined,
    input: &[u8],
    inout: &mut [u8],
    stride: usize,
    read: impl Fn(&[u8]) -> T,
    val_width: usize,
    idx_off: usize,
) -> Result<()> {
    let _ = val_width;
    for (i, o) in input
        .chunks_exact(stride)
        .zip(inout.chunks_exact_mut(stride))
    {
        let (a, b) = (read(i), read(o));
        let ia = i32::from_ne_bytes(i[idx_off..idx_off + 4].try_into().unwrap());
        let ib = i32::from_ne_bytes(o[idx_off..idx_off + 4].try_into().unwrap());
        let take_a = match p {
            Predefined::MaxLoc => a > b || (a == b && ia < ib),
            Predefined::MinLoc => a < b || (a == b && ia < ib),
            _ => return Err(unsupported(p, "pair types")),
        };
        if take_a {
            o.copy_from_slice(i);
        }
    }
    Ok(())
}

fn apply_predefined(p: Predefined, basic: Basic, input: &[u8], inout: &mut [u8]) -> Result<()> {
    use Basic::*;
    match p {
        Predefined::NoOp => return Ok(()),
        Predefined::Replace => {
            inout.copy_from_slice(input);
            return Ok(());
        }
        _ => {}
    }
    match basic {
        I8 | Char => arith!(p, i8, input, inout, int),
        U8 | Byte => arith!(p, u8, input, inout, int),
        I16 => arith!(p, i16, input, inout, int),
        U16 => arith!(p, u16, input, inout, int),
        I32 => arith!(p, i32, input, inout, int),
        U32 => arith!(p, u32, input, inout, int),
        I64 => arith!(p, i64, input, inout, int),
        U64 => arith!(p, u64, input, inout, int),
        F32 => arith!(p, f32, input, inout, float),
        F64 => arith!(p, f64, input, inout, float),
        Bool => match p {
            Predefined::Land | Predefined::Band | Predefined::Min | Predefined::Prod => {
                fold!(u8, input, inout, |a, b| ((a != 0) && (b != 0)) as u8)
            }
            Predefined::Lor | Predefined::Bor | Predefined::Max | Predefined::Sum => {
                fold!(u8, input, inout, |a, b| ((a != 0) || (b != 0)) as u8)
            }
            Predefined::Lxor | Predefined::Bxor => {
                fold!(u8, input, inout, |a, b| ((a != 0) != (b != 0)) as u8)
            }
            _ => return Err(unsupported(p, "bool")),
        },
        C32 => complex::<f32>(p, input, inout)?,
        C64 => complex::<f64>(p, input, inout)?,
        FloatInt => loc(
            p,
            input,
            inout,
            8,
            |b| f32::from_ne_bytes(b[..4].try_into().unwrap()),
            4,
            4,
        )?,
        DoubleInt => loc(
            p,
            input,
            inout,
            16,
            |b| f64::from_ne_bytes(b[..8].try_into().unwrap()),
            8,
            8,
        )?,
        LongInt => loc(
            p,
            input,
            inout,
            16,
            |b| i64::from_ne_bytes(b[..8].try_into().unwrap()),
            8,
            8,
        )?,
        TwoInt => loc(
            p,
            input,
            inout,
            8,
            |b| i32::from_ne_bytes(b[..4].try_into().unwrap()),
            4,
            4,
        )?,
        ShortInt => loc(
            p,
            input,
            inout,
            8,
            |b| i16::from_ne_bytes(b[..2].try_into().unwrap()),
            2,
            4,
        )?,
        LongDouble | LongDoubleInt | F16 | CLongDouble => {
            return Err(Error::NotImplemented(format!(
                "reductions on {basic:?} are not implemented"
            )))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes<T: Copy>(v: &[T]) -> Vec<u8> {
        // SAFETY: reading plain-old-data values as bytes.
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
            .to_vec()
    }

    #[test]
    fn sum_and_max_f64() {
        let a = bytes(&[1.0f64, 5.0]);
        let mut b = bytes(&[2.0f64, 3.0]);
        let dt = Datatype::new(Basic::F64);
        Op::Predefined(Predefined::Sum)
            .apply(&a, &mut b, 2, &dt)
            .unwrap();
        assert_eq!(b, bytes(&[3.0f64, 8.0]));
        Op::Predefined(Predefined::Max)
            .apply(&a, &mut b, 2, &dt)
            .unwrap();
        assert_eq!(b, bytes(&[3.0f64, 8.0]));
    }

    #[test]
    fn maxloc_ties_take_smaller_index() {
        let a = bytes(&[7i32, 3]);
        let mut b = bytes(&[7i32, 1]);
        Op::Predefined(Predefined::MaxLoc)
            .apply(&a, &mut b, 1, &Datatype::new(Basic::TwoInt))
            .unwrap();
        assert_eq!(b, bytes(&[7i32, 1]));
    }

    #[test]
    fn bitwise_on_float_is_refused() {
        let a = bytes(&[1.0f32]);
        let mut b = a.clone();
        assert!(Op::Predefined(Predefined::Bxor)
            .apply(&a, &mut b, 1, &Datatype::new(Basic::F32))
            .is_err());
    }
}
