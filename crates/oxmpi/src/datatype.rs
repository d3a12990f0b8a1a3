//! Datatypes (MPI-4.1 chapter 5). The runtime moves bytes; a datatype tells
//! reductions how to read them, users how many elements a message holds,
//! and, for a derived datatype, where in memory its data lies.
//!
//! A derived datatype is a tree ([`Layout`]) mirroring the constructor
//! calls that built it (contiguous, vector, indexed, struct, resized); its
//! size, bounds and true bounds are computed once, when it is built.
//! Packing walks the tree and copies each contiguous run; a subtree whose
//! data is one dense run is copied in one piece.

use std::sync::Arc;

use crate::error::{Error, Result};

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
    /// Complex of two x87 long doubles (C `long double _Complex`).
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

    /// Alignment in memory (of the widest scalar inside).
    pub const fn align(self) -> usize {
        use Basic::*;
        match self {
            C32 => 4,
            C64 => 8,
            LongDouble | LongDoubleComplex | LongDoubleInt => 16,
            FloatInt | TwoInt | ShortInt => 4,
            DoubleInt | LongInt => 8,
            _ => self.size(),
        }
    }

    /// The scalar fields of one element: (offset, width, kind), where kind
    /// says how external32 converts it.
    fn fields(self) -> &'static [(usize, usize, Scalar)] {
        use Basic::*;
        use Scalar::*;
        match self {
            Byte | Char | I8 | U8 | Bool => &[(0, 1, Int)],
            I16 | U16 | F16 => &[(0, 2, Int)],
            I32 | U32 | F32 => &[(0, 4, Int)],
            I64 | U64 | F64 => &[(0, 8, Int)],
            C32 => &[(0, 4, Int), (4, 4, Int)],
            C64 => &[(0, 8, Int), (8, 8, Int)],
            LongDouble => &[(0, 16, X87)],
            LongDoubleComplex => &[(0, 16, X87), (16, 16, X87)],
            FloatInt | TwoInt => &[(0, 4, Int), (4, 4, Int)],
            DoubleInt | LongInt => &[(0, 8, Int), (8, 4, Int)],
            ShortInt => &[(0, 2, Int), (4, 4, Int)],
            LongDoubleInt => &[(0, 16, X87), (16, 4, Int)],
        }
    }

    /// Size of one element in the external32 representation.
    pub fn external32_size(self) -> usize {
        self.fields().iter().map(|f| f.1).sum()
    }
}

/// How external32 converts a scalar field.
#[derive(Clone, Copy, Debug)]
enum Scalar {
    /// An integer or IEEE float: byte-swapped to big-endian.
    Int,
    /// An x87 extended double (16 bytes of storage): converted to IEEE
    /// binary128, big-endian.
    X87,
}

/// A datatype: a predefined basic type, or a derived one with its layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datatype {
    /// The basic type: for a derived type, that of all its elements when
    /// they are all of one type (what reductions need), else `Byte`.
    pub basic: Basic,
    /// The layout of a derived datatype (None for a predefined one).
    pub layout: Option<Arc<Layout>>,
}

impl Datatype {
    pub const fn new(basic: Basic) -> Datatype {
        Datatype {
            basic,
            layout: None,
        }
    }

    /// A derived datatype.
    pub fn derived(layout: Layout) -> Datatype {
        Datatype {
            basic: layout.elem.unwrap_or(Basic::Byte),
            layout: Some(Arc::new(layout)),
        }
    }

    /// Size in bytes of the data of one element (what a message of one
    /// element carries).
    pub fn size(&self) -> usize {
        self.layout.as_ref().map_or(self.basic.size(), |l| l.size)
    }

    /// The layout (a leaf for a predefined type).
    pub fn layout(&self) -> Arc<Layout> {
        match &self.layout {
            Some(l) => l.clone(),
            None => Arc::new(Layout::basic(self.basic)),
        }
    }

    /// (lb, extent).
    pub fn extent(&self) -> (isize, isize) {
        match &self.layout {
            Some(l) => (l.lb, l.ub - l.lb),
            None => (0, self.basic.size() as isize),
        }
    }

    /// (true lb, true extent).
    pub fn true_extent(&self) -> (isize, isize) {
        match &self.layout {
            Some(l) => (l.true_lb, l.true_ub - l.true_lb),
            None => (0, self.basic.size() as isize),
        }
    }

    /// Whether `count` elements are one dense run starting at the buffer
    /// (so a message needs no packing).
    pub fn is_contiguous(&self) -> bool {
        match &self.layout {
            None => true,
            Some(l) => l.fills_extent() && l.lb == 0,
        }
    }

    /// Number of basic elements in one element of this type.
    pub fn elements(&self) -> usize {
        self.layout.as_ref().map_or(1, |l| l.nelems)
    }
}

/// The shape of a derived datatype: one node of the constructor tree.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    Basic(Basic),
    /// `count` copies of `child`, one extent apart.
    Contiguous {
        count: usize,
        child: Arc<Layout>,
    },
    /// `count` blocks of `blocklen` copies of `child`, block starts
    /// `stride` bytes apart.
    Vector {
        count: usize,
        blocklen: usize,
        stride: isize,
        child: Arc<Layout>,
    },
    /// Blocks of (blocklen, byte displacement) copies of `child`.
    Indexed {
        blocks: Vec<(usize, isize)>,
        child: Arc<Layout>,
    },
    /// Blocks of (blocklen, byte displacement, type).
    Struct {
        blocks: Vec<(usize, isize, Arc<Layout>)>,
    },
    /// `child` with new bounds.
    Resized {
        child: Arc<Layout>,
    },
}

/// A datatype's layout and the bounds computed from it.
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub node: Node,
    /// Bytes of data in one element.
    pub size: usize,
    pub lb: isize,
    pub ub: isize,
    pub true_lb: isize,
    pub true_ub: isize,
    /// Alignment: that of the most aligned basic element.
    pub align: usize,
    /// The basic type of every element, when there is only one.
    pub elem: Option<Basic>,
    /// Number of basic elements.
    pub nelems: usize,
    /// Whether the data is one run `[true_lb, true_lb + size)` in typemap
    /// order.
    pub dense: bool,
}

/// A run of copies of one layout: what every constructor is made of.
struct Part<'a> {
    disp: isize,
    count: usize,
    child: &'a Layout,
}

fn overflow() -> Error {
    Error::Type("datatype size or extent overflows".into())
}

impl Layout {
    /// The layout of a predefined type.
    pub fn basic(b: Basic) -> Layout {
        let s = b.size() as isize;
        Layout {
            node: Node::Basic(b),
            size: b.size(),
            lb: 0,
            ub: s,
            true_lb: 0,
            true_ub: s,
            align: b.align(),
            elem: Some(b),
            nelems: 1,
            dense: true,
        }
    }

    /// Extent (ub - lb).
    pub fn extent(&self) -> isize {
        self.ub - self.lb
    }

    /// Whether the data fills the whole extent densely (copies of it, one
    /// extent apart, form one run).
    pub fn fills_extent(&self) -> bool {
        self.dense
            && self.true_lb == self.lb
            && self.true_ub == self.ub
            && self.size as isize == self.extent()
    }

    /// Computes a layout from its parts (in typemap order).
    fn from_parts(node: Node, parts: &[Part<'_>], is_struct: bool) -> Result<Layout> {
        let mut size = 0usize;
        let mut nelems = 0usize;
        let (mut lb, mut ub) = (isize::MAX, isize::MIN);
        let (mut tlb, mut tub) = (isize::MAX, isize::MIN);
        let mut align = 1;
        let mut elem: Option<Option<Basic>> = None;
        let mut dense = true;
        let mut run_end: Option<isize> = None;
        for p in parts {
            if p.count == 0 {
                continue;
            }
            let c = p.child;
            let n = p.count as isize;
            let ext = c.extent();
            let last = (n - 1).checked_mul(ext).ok_or_else(overflow)?;
            let first_off = p.disp;
            let last_off = p.disp.checked_add(last).ok_or_else(overflow)?;
            lb = lb.min(first_off + c.lb).min(last_off + c.lb);
            ub = ub.max(first_off + c.ub).max(last_off + c.ub);
            size = size
                .checked_add(c.size.checked_mul(p.count).ok_or_else(overflow)?)
                .ok_or_else(overflow)?;
            nelems += c.nelems * p.count;
            align = align.max(c.align);
            if c.size > 0 {
                tlb = tlb.min(first_off + c.true_lb).min(last_off + c.true_lb);
                tub = tub.max(first_off + c.true_ub).max(last_off + c.true_ub);
                elem = Some(match elem {
                    None => c.elem,
                    Some(e) if e == c.elem => e,
                    Some(_) => None,
                });
                // Dense: each copy dense, and each starting where the
                // previous one's data ended.
                let part_dense = c.dense && (p.count == 1 || c.fills_extent());
                let start = first_off + c.true_lb;
                if !part_dense || run_end.is_some_and(|e| e != start) {
                    dense = false;
                }
                run_end = Some(start + c.size as isize * n);
            }
        }
        if lb > ub {
            // No element at all: MPI's empty type has lb = ub = 0.
            lb = 0;
            ub = 0;
        }
        if tlb > tub {
            tlb = 0;
            tub = 0;
        }
        if is_struct && size > 0 {
            // The extent of a struct is padded to the alignment of its
            // most aligned member, as C pads structs (MPI-4.1 §5.1.6).
            let ext = ub - lb;
            let a = align as isize;
            let padded = (ext + a - 1) / a * a;
            ub = lb + padded;
        }
        Ok(Layout {
            node,
            size,
            lb,
            ub,
            true_lb: tlb,
            true_ub: tub,
            align,
            elem: elem
                .flatten()
                .or(if size == 0 { Some(Basic::Byte) } else { None }),
            nelems,
            dense,
        })
    }

    /// MPI_Type_contiguous.
    pub fn contiguous(count: usize, child: Arc<Layout>) -> Result<Layout> {
        let parts = [Part {
            disp: 0,
            count,
            child: &child,
        }];
        let node = Node::Contiguous {
            count,
            child: child.clone(),
        };
        Layout::from_parts(node, &parts, false)
    }

    /// MPI_Type_create_hvector (stride in bytes); MPI_Type_vector is this
    /// with the stride multiplied by the child's extent.
    pub fn hvector(
        count: usize,
        blocklen: usize,
        stride: isize,
        child: Arc<Layout>,
    ) -> Result<Layout> {
        let parts: Vec<Part<'_>> = (0..count)
            .map(|i| Part {
                disp: i as isize * stride,
                count: blocklen,
                child: &child,
            })
            .collect();
        let node = Node::Vector {
            count,
            blocklen,
            stride,
            child: child.clone(),
        };
        Layout::from_parts(node, &parts, false)
    }

    /// MPI_Type_create_hindexed (displacements in bytes); the other
    /// indexed constructors reduce to it.
    pub fn hindexed(blocks: Vec<(usize, isize)>, child: Arc<Layout>) -> Result<Layout> {
        let parts: Vec<Part<'_>> = blocks
            .iter()
            .map(|&(n, d)| Part {
                disp: d,
                count: n,
                child: &child,
            })
            .collect();
        let layout = Layout::from_parts(Node::Basic(Basic::Byte), &parts, false)?;
        Ok(Layout {
            node: Node::Indexed {
                blocks,
                child: child.clone(),
            },
            ..layout
        })
    }

    /// MPI_Type_create_struct.
    pub fn strukt(blocks: Vec<(usize, isize, Arc<Layout>)>) -> Result<Layout> {
        let parts: Vec<Part<'_>> = blocks
            .iter()
            .map(|(n, d, t)| Part {
                disp: *d,
                count: *n,
                child: t,
            })
            .collect();
        let layout = Layout::from_parts(Node::Basic(Basic::Byte), &parts, true)?;
        Ok(Layout {
            node: Node::Struct { blocks },
            ..layout
        })
    }

    /// MPI_Type_create_resized.
    pub fn resized(child: Arc<Layout>, lb: isize, extent: isize) -> Layout {
        Layout {
            size: child.size,
            lb,
            ub: lb + extent,
            true_lb: child.true_lb,
            true_ub: child.true_ub,
            align: child.align,
            elem: child.elem,
            nelems: child.nelems,
            dense: child.dense,
            node: Node::Resized { child },
        }
    }

    /// The byte range `count` elements touch, relative to the buffer start
    /// (empty for no data).
    pub fn span(&self, count: usize) -> Option<(isize, isize)> {
        if count == 0 || self.size == 0 {
            return None;
        }
        let last = (count as isize - 1) * self.extent();
        Some((
            self.true_lb.min(last + self.true_lb),
            self.true_ub.max(last + self.true_ub),
        ))
    }

    /// Calls `f(offset, len)` for each contiguous run of data of one
    /// element at `base`, in typemap order.
    pub fn for_each_run(&self, base: isize, f: &mut dyn FnMut(isize, usize)) {
        if self.size == 0 {
            return;
        }
        if self.dense {
            f(base + self.true_lb, self.size);
            return;
        }
        let block = |child: &Layout, at: isize, n: usize, f: &mut dyn FnMut(isize, usize)| {
            if child.fills_extent() {
                if n > 0 && child.size > 0 {
                    f(at + child.true_lb, child.size * n);
                }
            } else {
                for k in 0..n {
                    child.for_each_run(at + k as isize * child.extent(), f);
                }
            }
        };
        match &self.node {
            Node::Basic(b) => f(base, b.size()),
            Node::Contiguous { count, child } => block(child, base, *count, f),
            Node::Vector {
                count,
                blocklen,
                stride,
                child,
            } => {
                for i in 0..*count {
                    block(child, base + i as isize * stride, *blocklen, f);
                }
            }
            Node::Indexed { blocks, child } => {
                for &(n, d) in blocks {
                    block(child, base + d, n, f);
                }
            }
            Node::Struct { blocks } => {
                for (n, d, t) in blocks {
                    block(t, base + d, *n, f);
                }
            }
            Node::Resized { child } => child.for_each_run(base, f),
        }
    }

    /// Calls `f(offset, basic, n)` for each run of `n` consecutive basic
    /// elements of one element at `base`, in typemap order.
    pub fn for_each_elem(&self, base: isize, f: &mut dyn FnMut(isize, Basic, usize)) {
        let block =
            |child: &Layout, at: isize, n: usize, f: &mut dyn FnMut(isize, Basic, usize)| {
                match &child.node {
                    Node::Basic(b) => {
                        if n > 0 {
                            f(at, *b, n);
                        }
                    }
                    _ => {
                        for k in 0..n {
                            child.for_each_elem(at + k as isize * child.extent(), f);
                        }
                    }
                }
            };
        match &self.node {
            Node::Basic(b) => f(base, *b, 1),
            Node::Contiguous { count, child } => block(child, base, *count, f),
            Node::Vector {
                count,
                blocklen,
                stride,
                child,
            } => {
                for i in 0..*count {
                    block(child, base + i as isize * stride, *blocklen, f);
                }
            }
            Node::Indexed { blocks, child } => {
                for &(n, d) in blocks {
                    block(child, base + d, n, f);
                }
            }
            Node::Struct { blocks } => {
                for (n, d, t) in blocks {
                    block(t, base + d, *n, f);
                }
            }
            Node::Resized { child } => child.for_each_elem(base, f),
        }
    }

    /// Size of one element in the external32 representation.
    pub fn external32_size(&self) -> usize {
        let mut n = 0;
        self.for_each_elem(0, &mut |_, b, k| n += b.external32_size() * k);
        n
    }
}

/// The address `off` bytes from `base`; from a null base (MPI_BOTTOM),
/// `off` is an absolute address that `get_address` exposed.
fn at(base: *const u8, off: isize) -> *const u8 {
    if base.is_null() {
        std::ptr::with_exposed_provenance(off as usize)
    } else {
        base.wrapping_offset(off)
    }
}

/// Packs `count` elements of `layout` found at `base` into `out`.
///
/// # Safety
/// Every byte the elements' data occupies (see [`Layout::span`]) must be
/// readable memory at `base`.
pub unsafe fn pack(layout: &Layout, count: usize, base: *const u8, out: &mut Vec<u8>) {
    out.reserve(layout.size * count);
    for k in 0..count {
        layout.for_each_run(k as isize * layout.extent(), &mut |off, len| {
            // SAFETY: by this function's contract the run is readable.
            let src = unsafe { std::slice::from_raw_parts(at(base, off), len) };
            out.extend_from_slice(src);
        });
    }
}

/// Unpacks `count` elements of `layout` from `data` into memory at `base`;
/// returns the bytes consumed (stopping early when `data` runs out).
///
/// # Safety
/// Every byte the elements' data occupies must be writable memory at
/// `base`, not aliased by `data`.
pub unsafe fn unpack(layout: &Layout, count: usize, data: &[u8], base: *mut u8) -> usize {
    let mut pos = 0;
    for k in 0..count {
        layout.for_each_run(k as isize * layout.extent(), &mut |off, len| {
            let n = len.min(data.len() - pos);
            if n > 0 {
                // SAFETY: by this function's contract the run is writable.
                unsafe {
                    std::ptr::copy_nonoverlapping(data[pos..].as_ptr(), at(base, off) as *mut u8, n)
                };
            }
            pos += n;
        });
        if pos == data.len() {
            break;
        }
    }
    pos
}

/// Converts one x87 extended double (little-endian, 10 significant bytes)
/// to IEEE binary128, big-endian.
fn x87_to_binary128(src: &[u8]) -> [u8; 16] {
    let mant = u64::from_le_bytes(src[0..8].try_into().expect("8 bytes"));
    let se = u16::from_le_bytes(src[8..10].try_into().expect("2 bytes"));
    // binary128: 1 sign, 15 exponent (same bias as x87), 112 fraction; the
    // x87 integer bit is implicit there.
    let frac = ((mant & 0x7fff_ffff_ffff_ffff) as u128) << 49;
    let bits = ((se as u128) << 112) | frac;
    bits.to_be_bytes()
}

fn binary128_to_x87(src: &[u8], dst: &mut [u8]) {
    let bits = u128::from_be_bytes(src[0..16].try_into().expect("16 bytes"));
    let se = (bits >> 112) as u16;
    let exp = se & 0x7fff;
    let frac = ((bits >> 49) as u64) & 0x7fff_ffff_ffff_ffff;
    // The explicit integer bit: set for normal numbers, infinities, NaNs.
    let int_bit = if exp != 0 { 1u64 << 63 } else { 0 };
    dst[0..8].copy_from_slice(&(frac | int_bit).to_le_bytes());
    dst[8..10].copy_from_slice(&se.to_le_bytes());
    for b in &mut dst[10..16] {
        *b = 0;
    }
}

/// Packs `count` elements in the external32 representation (big-endian,
/// no padding).
///
/// # Safety
/// As for [`pack`].
pub unsafe fn pack_external32(layout: &Layout, count: usize, base: *const u8, out: &mut Vec<u8>) {
    for k in 0..count {
        layout.for_each_elem(k as isize * layout.extent(), &mut |off, b, n| {
            let w = b.size();
            for i in 0..n {
                let here = off + (i * w) as isize;
                for &(foff, fw, kind) in b.fields() {
                    // SAFETY: the element lies in readable memory by this
                    // function's contract.
                    let src =
                        unsafe { std::slice::from_raw_parts(at(base, here + foff as isize), fw) };
                    match kind {
                        Scalar::Int => out.extend(src.iter().rev()),
                        Scalar::X87 => out.extend_from_slice(&x87_to_binary128(src)),
                    }
                }
            }
        });
    }
}

/// Unpacks `count` elements from the external32 representation; returns
/// the bytes consumed.
///
/// # Safety
/// As for [`unpack`].
pub unsafe fn unpack_external32(
    layout: &Layout,
    count: usize,
    data: &[u8],
    base: *mut u8,
) -> Result<usize> {
    let need = layout.external32_size() * count;
    if data.len() < need {
        return Err(Error::Truncate {
            received: data.len(),
            capacity: need,
        });
    }
    let mut pos = 0;
    for k in 0..count {
        layout.for_each_elem(k as isize * layout.extent(), &mut |off, b, n| {
            let w = b.size();
            for i in 0..n {
                let here = off + (i * w) as isize;
                for &(foff, fw, kind) in b.fields() {
                    // SAFETY: the element lies in writable memory by this
                    // function's contract.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            at(base, here + foff as isize) as *mut u8,
                            fw,
                        )
                    };
                    match kind {
                        Scalar::Int => {
                            for (d, s) in dst.iter_mut().zip(data[pos..pos + fw].iter().rev()) {
                                *d = *s;
                            }
                            pos += fw;
                        }
                        Scalar::X87 => {
                            binary128_to_x87(&data[pos..pos + 16], dst);
                            pos += 16;
                        }
                    }
                }
            }
        });
    }
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(b: Basic) -> Arc<Layout> {
        Arc::new(Layout::basic(b))
    }

    #[test]
    fn vector_bounds_and_packing() {
        // 3 blocks of 2 i32, stride 4 elements (16 bytes).
        let v = Layout::hvector(3, 2, 16, leaf(Basic::I32)).unwrap();
        assert_eq!((v.size, v.lb, v.ub), (24, 0, 40));
        assert!(!v.dense);
        let src: Vec<i32> = (0..12).collect();
        let mut out = Vec::new();
        // SAFETY: 12 i32 cover the 40-byte span.
        unsafe { pack(&v, 1, src.as_ptr().cast(), &mut out) };
        let got: Vec<i32> = out
            .chunks(4)
            .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, vec![0, 1, 4, 5, 8, 9]);
        let mut back = vec![-1i32; 12];
        // SAFETY: as above, writable.
        unsafe { unpack(&v, 1, &out, back.as_mut_ptr().cast()) };
        assert_eq!(&back[..6], &[0, 1, -1, -1, 4, 5]);
    }

    #[test]
    fn contiguous_of_dense_is_dense_and_struct_is_padded() {
        let c = Layout::contiguous(4, leaf(Basic::F64)).unwrap();
        assert!(c.fills_extent());
        let s = Layout::strukt(vec![(1, 0, leaf(Basic::F64)), (1, 8, leaf(Basic::I8))]).unwrap();
        assert_eq!((s.size, s.extent(), s.true_ub), (9, 16, 9));
        assert!(s.dense && !s.fills_extent());
        let r = Layout::resized(leaf(Basic::I32), -4, 12);
        assert_eq!((r.lb, r.extent(), r.true_lb, r.true_ub), (-4, 12, 0, 4));
    }

    #[test]
    fn external32_round_trip() {
        let l = Layout::strukt(vec![
            (1, 0, leaf(Basic::I32)),
            (1, 16, leaf(Basic::LongDouble)),
        ])
        .unwrap();
        let mut src = [0u8; 32];
        src[..4].copy_from_slice(&0x0102_0304i32.to_ne_bytes());
        // 1.5 as x87: mantissa 0xC000..., exponent 0x3fff.
        src[16..24].copy_from_slice(&0xC000_0000_0000_0000u64.to_le_bytes());
        src[24..26].copy_from_slice(&0x3fffu16.to_le_bytes());
        let mut out = Vec::new();
        // SAFETY: 32 readable bytes.
        unsafe { pack_external32(&l, 1, src.as_ptr(), &mut out) };
        assert_eq!(out.len(), 20);
        assert_eq!(&out[..4], &[1, 2, 3, 4]);
        assert_eq!(&out[4..7], &[0x3f, 0xff, 0x80]);
        let mut back = [0u8; 32];
        // SAFETY: 32 writable bytes.
        let n = unsafe { unpack_external32(&l, 1, &out, back.as_mut_ptr()) }.unwrap();
        assert_eq!(n, 20);
        assert_eq!(&back[..4], &src[..4]);
        assert_eq!(&back[16..26], &src[16..26]);
    }
}
