//! Collective algorithms (MPI-4.1 chapter 6) written against point-to-point
//! on a communicator's collective context, so that they never match user
//! messages. Every algorithm fixes its combination order, so reductions give
//! the same bits on every rank and in every run for the same world size.

use crate::backend::Status;
use crate::datatype::Datatype;
use crate::error::{Error, Result};
use crate::op::Op;

/// Point-to-point on the collective context.
pub(crate) trait Pt2Pt {
    fn rank(&self) -> i32;
    fn size(&self) -> i32;
    fn csend(&self, data: &[u8], dest: i32, tag: i32) -> Result<()>;
    fn crecv(&self, buf: &mut [u8], src: i32, tag: i32) -> Result<Status>;
    /// Receives a message of unknown length.
    fn crecv_vec(&self, src: i32, tag: i32) -> Result<Vec<u8>>;
    /// Sends to `dest` while receiving from `src` (no deadlock if both are
    /// large).
    fn csendrecv_vec(&self, data: &[u8], dest: i32, src: i32, tag: i32) -> Result<Vec<u8>>;
}

const TAG_BARRIER: i32 = 1;
const TAG_BCAST: i32 = 2;
const TAG_REDUCE: i32 = 3;
const TAG_GATHER: i32 = 4;
const TAG_SCATTER: i32 = 5;
const TAG_ALLTOALL: i32 = 6;

/// Dissemination barrier: ceil(log2 n) rounds.
pub(crate) fn barrier(c: &impl Pt2Pt) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    let mut k = 1;
    while k < n {
        c.csendrecv_vec(&[], (r + k) % n, (r - k + n) % n, TAG_BARRIER)?;
        k <<= 1;
    }
    Ok(())
}

/// Binomial-tree broadcast from `root`.
pub(crate) fn bcast(c: &impl Pt2Pt, buf: &mut [u8], root: i32) -> Result<()> {
    let (r, n) = (c.rank(), c.size());
    if n == 1 {
        return Ok(());
    }
    let rel = (r - root + n) % n;
    let mut mask = 1;
    while mask < n {
        if rel & mask != 0 {
            let src = (r - mask + n) % n;
            c.crecv(buf, src, TAG_BCAST)?;
            break;
        }
        mask <<= 1;
    }
    mask >>= 1;
    while mask > 0 {
        if rel + mask < n {
            c.csend(buf, (r + mask) % n, TAG_BCAST)?;
        }
        mask >>= 1;
    }
    Ok(())
}

/// Reduces to rank 0 in a binomial tree that always combines
/// `lower ranks op higher ranks`, so it is right for non-commutative ops
/// and its result does not depend on timing. Returns the result on rank 0.
fn reduce_to_zero(
    c: &impl Pt2Pt,
    data: &[u8],
    count: usize,
    dtype: &Datatype,
    op: &Op,
) -> Result<Option<Vec<u8>>> {
    let (r, n) = (c.rank(), c.size());
    let mut acc = data.to_vec();
    let mut tmp = vec![0u8; data.len()];
    let mut mask = 1;
    while mask < n {
        if r & mask == 0 {
            let src = r | mask;
            if src < n {
                c.crecv(&mut tmp, src, TAG_REDUCE)?;
                // tmp = acc op tmp  (acc covers the lower ranks)
                op.apply(&acc, &mut tmp, count, dtype)?;
                std::mem::swap(&mut acc, &mut tmp);
            }
        } else {
            c.csend(&acc, r & !mask, TAG_REDUCE)?;
            return Ok(None);
        }
        mask <<= 1;
    }
    Ok(Some(acc))
}

/// MPI_Reduce. `data` is this rank's contribution; the result is written to
/// `out` on `root`.
pub(crate) fn reduce(
    c: &impl Pt2Pt,
    data: &[u8],
    out: Option<&mut [u8]>,
    count: usize,
    dtype: &Datatype,
    op: &Op,
    root: i32,
) -> Result<()> {
    let r = c.rank();
    let res = reduce_to_zero(c, data, count, dtype, op)?;
    if root == 0 {
        if let (Some(res), Some(out)) = (res, out) {
            out[..res.len()].copy_from_slice(&res);
        }
        return Ok(());
    }
    if r == 0 {
        c.csend(&res.expect("rank 0 holds the result"), root, TAG_REDUCE)?;
    }
    if r == root {
        let out = out.ok_or_else(|| Error::Buffer("root needs a receive buffer".into()))?;
        let n = data.len();
        c.crecv(&mut out[..n], 0, TAG_REDUCE)?;
    }
    Ok(())
}

/// MPI_Allreduce: the reduction at rank 0, then a broadcast, so every rank
/// holds the same bits.
pub(crate) fn allreduce(
    c: &impl Pt2Pt,
    data: &[u8],
    out: &mut [u8],
    count: usize,
    dtype: &Datatype,
    op: &Op,
) -> Result<()> {
    let n = data.len();
    if let Some(res) = reduce_to_zero(c, data, count, dtype, op)? {
        out[..n].copy_from_slice(&res);
    }
    bcast(c, &mut out[..n], 0)
}

/// Broadcast of a blob whose length only the root knows.
pub(crate) fn bcast_bytes(c: &impl Pt2Pt, data: Option<Vec<u8>>, root: i32) -> Result<Vec<u8>> {
    let mut len = (data.as_ref().map_or(0, Vec::len) as u64).to_ne_bytes();
    bcast(c, &mut len, root)?;
    let mut v = match data {
        Some(v) if c.rank() == root => v,
        _ => vec![0u8; u64::from_ne_bytes(len) as usize],
    };
    bcast(c, &mut v, root)?;
    Ok(v)
}

/// Gathers blobs of any length to `root`, in rank order.
pub(crate) fn gather_bytes(c: &impl Pt2Pt, data: &[u8], root: i32) -> Result<Option<Vec<Vec<u8>>>> {
    let (r, n) = (c.rank(), c.size());
    if r != root {
        c.csend(data, root, TAG_GATHER)?;
        return Ok(None);
    }
    let mut out = Vec::with_capacity(n as usize);
    for src in 0..n {
        out.push(if src == root {
            data.to_vec()
        } else {
            c.crecv_vec(src, TAG_GATHER)?
        });
    }
    Ok(Some(out))
}

/// Every rank gets every rank's blob.
pub(crate) fn allgather_bytes(c: &impl Pt2Pt, data: &[u8]) -> Result<Vec<Vec<u8>>> {
    let gathered = gather_bytes(c, data, 0)?;
    let packed = gathered.map(|parts| encode_blobs(&parts));
    let packed = bcast_bytes(c, packed, 0)?;
    decode_blobs(&packed, c.size() as usize)
}

/// Root sends blob i to rank i.
pub(crate) fn scatter_bytes(
    c: &impl Pt2Pt,
    data: Option<Vec<Vec<u8>>>,
    root: i32,
) -> Result<Vec<u8>> {
    let (r, n) = (c.rank(), c.size());
    if r != root {
        return c.crecv_vec(root, TAG_SCATTER);
    }
    let data =
        data.ok_or_else(|| Error::Arg("the root must provide the data to scatter".into()))?;
    if data.len() != n as usize {
        return Err(Error::Arg(format!(
            "scatter needs {n} items at the root, got {}",
            data.len()
        )));
    }
    let mut mine = Vec::new();
    for (dst, blob) in data.into_iter().enumerate() {
        if dst as i32 == root {
            mine = blob;
        } else {
            c.csend(&blob, dst as i32, TAG_SCATTER)?;
        }
    }
    Ok(mine)
}

/// Pairwise exchange: in round k, send to r+k and receive from r-k.
pub(crate) fn alltoall_bytes(c: &impl Pt2Pt, mut data: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>> {
    let (r, n) = (c.rank(), c.size());
    if data.len() != n as usize {
        return Err(Error::Arg(format!(
            "alltoall needs {n} items, got {}",
            data.len()
        )));
    }
    let mut out = vec![Vec::new(); n as usize];
    out[r as usize] = std::mem::take(&mut data[r as usize]);
    for k in 1..n {
        let dst = (r + k) % n;
        let src = (r - k + n) % n;
        out[src as usize] = c.csendrecv_vec(&data[dst as usize], dst, src, TAG_ALLTOALL)?;
    }
    Ok(out)
}

/// Reduction of blobs with a caller-supplied combiner, in rank order.
pub(crate) fn reduce_bytes(
    c: &impl Pt2Pt,
    data: Vec<u8>,
    root: Option<i32>,
    combine: &mut dyn FnMut(&[u8], &[u8]) -> Result<Vec<u8>>,
) -> Result<Option<Vec<u8>>> {
    let (r, n) = (c.rank(), c.size());
    let mut acc = data;
    let mut mask = 1;
    let mut holder = true;
    while mask < n {
        if r & mask == 0 {
            let src = r | mask;
            if src < n {
                let right = c.crecv_vec(src, TAG_REDUCE)?;
                acc = combine(&acc, &right)?;
            }
        } else {
            c.csend(&acc, r & !mask, TAG_REDUCE)?;
            holder = false;
            break;
        }
        mask <<= 1;
    }
    match root {
        None => {
            let v = bcast_bytes(c, holder.then_some(acc), 0)?;
            Ok(Some(v))
        }
        Some(0) => Ok(holder.then_some(acc)),
        Some(root) => {
            if r == 0 {
                c.csend(&acc, root, TAG_REDUCE)?;
            }
            if r == root {
                Ok(Some(c.crecv_vec(0, TAG_REDUCE)?))
            } else {
                Ok(None)
            }
        }
    }
}

/// Length-prefixed concatenation of blobs.
pub(crate) fn encode_blobs(parts: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = parts.iter().map(|p| p.len() + 8).sum();
    let mut v = Vec::with_capacity(total);
    for p in parts {
        v.extend_from_slice(&(p.len() as u64).to_ne_bytes());
        v.extend_from_slice(p);
    }
    v
}

pub(crate) fn decode_blobs(mut b: &[u8], n: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if b.len() < 8 {
            return Err(Error::Intern("short blob list".into()));
        }
        let len = u64::from_ne_bytes(b[..8].try_into().expect("8 bytes")) as usize;
        let body = b
            .get(8..8 + len)
            .ok_or_else(|| Error::Intern("short blob".into()))?;
        out.push(body.to_vec());
        b = &b[8 + len..];
    }
    Ok(out)
}
