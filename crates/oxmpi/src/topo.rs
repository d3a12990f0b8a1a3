//! Virtual topologies (MPI-4.1 chapter 8): Cartesian grids, graphs and
//! distributed graphs attached to a communicator, and the neighbourhoods
//! that neighbour collectives exchange with.

use crate::backend::PROC_NULL;
use crate::error::{Error, Result};

/// A communicator's virtual topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// A Cartesian grid, ranks in row-major order of coordinates.
    Cart { dims: Vec<i32>, periods: Vec<bool> },
    /// A graph known to every process: `index[i]` is the cumulative degree
    /// of nodes 0..=i, `edges` the concatenated neighbour lists.
    Graph { index: Vec<i32>, edges: Vec<i32> },
    /// This process's part of a distributed graph.
    DistGraph {
        sources: Vec<i32>,
        destinations: Vec<i32>,
        /// Edge weights, or None for MPI_UNWEIGHTED.
        weights: Option<(Vec<i32>, Vec<i32>)>,
    },
}

/// MPI_CART, MPI_GRAPH, MPI_DIST_GRAPH (MPI_UNDEFINED for none).
pub mod kind {
    pub const GRAPH: i32 = 1;
    pub const CART: i32 = 2;
    pub const DIST_GRAPH: i32 = 3;
}

impl Topology {
    /// A Cartesian topology, checked.
    pub fn cart(dims: Vec<i32>, periods: Vec<bool>) -> Result<Topology> {
        if dims.len() != periods.len() {
            return Err(Error::Arg(format!(
                "{} dimensions but {} periods",
                dims.len(),
                periods.len()
            )));
        }
        if let Some(d) = dims.iter().find(|&&d| d <= 0) {
            return Err(Error::Dims(format!("dimension of extent {d}")));
        }
        Ok(Topology::Cart { dims, periods })
    }

    /// A graph topology, checked (`index` without the leading 0).
    pub fn graph(index: Vec<i32>, edges: Vec<i32>) -> Result<Topology> {
        let nnodes = index.len() as i32;
        let mut prev = 0;
        for &i in &index {
            if i < prev {
                return Err(Error::Arg("graph index must not decrease".into()));
            }
            prev = i;
        }
        if prev as usize != edges.len() {
            return Err(Error::Arg(format!(
                "graph index says {prev} edges, {} given",
                edges.len()
            )));
        }
        if let Some(&e) = edges.iter().find(|&&e| e < 0 || e >= nnodes) {
            return Err(Error::Rank {
                rank: e,
                size: nnodes,
            });
        }
        Ok(Topology::Graph { index, edges })
    }

    /// MPI_CART / MPI_GRAPH / MPI_DIST_GRAPH.
    pub fn kind(&self) -> i32 {
        match self {
            Topology::Cart { .. } => kind::CART,
            Topology::Graph { .. } => kind::GRAPH,
            Topology::DistGraph { .. } => kind::DIST_GRAPH,
        }
    }

    /// Number of processes the topology spans (DistGraph: unknown, None).
    pub fn nnodes(&self) -> Option<i32> {
        match self {
            Topology::Cart { dims, .. } => Some(dims.iter().product()),
            Topology::Graph { index, .. } => Some(index.len() as i32),
            Topology::DistGraph { .. } => None,
        }
    }

    /// The (sources, destinations) a neighbour collective of `rank` talks
    /// to, in MPI's order; PROC_NULL for a missing Cartesian neighbour.
    pub fn neighbors(&self, rank: i32) -> Result<(Vec<i32>, Vec<i32>)> {
        match self {
            Topology::Cart { dims, .. } => {
                let mut v = Vec::with_capacity(2 * dims.len());
                for d in 0..dims.len() {
                    let (src, dst) = self.cart_shift(rank, d, 1)?;
                    // For dimension d: the neighbour at -1, then at +1.
                    v.push(src);
                    v.push(dst);
                }
                Ok((v.clone(), v))
            }
            Topology::Graph { .. } => {
                let n = self.graph_neighbors(rank)?;
                Ok((n.clone(), n))
            }
            Topology::DistGraph {
                sources,
                destinations,
                ..
            } => Ok((sources.clone(), destinations.clone())),
        }
    }

    /// Coordinates of `rank` in a Cartesian topology.
    pub fn cart_coords(&self, rank: i32) -> Result<Vec<i32>> {
        let Topology::Cart { dims, .. } = self else {
            return Err(not_cart());
        };
        let n: i32 = dims.iter().product();
        if rank < 0 || rank >= n {
            return Err(Error::Rank { rank, size: n });
        }
        let mut coords = vec![0; dims.len()];
        let mut r = rank;
        for i in (0..dims.len()).rev() {
            coords[i] = r % dims[i];
            r /= dims[i];
        }
        Ok(coords)
    }

    /// Rank at `coords` (periodic dimensions wrap; others must be in range).
    pub fn cart_rank(&self, coords: &[i32]) -> Result<i32> {
        let Topology::Cart { dims, periods } = self else {
            return Err(not_cart());
        };
        if coords.len() != dims.len() {
            return Err(Error::Arg(format!(
                "{} coordinates for a {}-dimensional grid",
                coords.len(),
                dims.len()
            )));
        }
        let mut rank = 0;
        for i in 0..dims.len() {
            let mut c = coords[i];
            if periods[i] {
                c = c.rem_euclid(dims[i]);
            } else if c < 0 || c >= dims[i] {
                return Err(Error::Rank {
                    rank: c,
                    size: dims[i],
                });
            }
            rank = rank * dims[i] + c;
        }
        Ok(rank)
    }

    /// MPI_Cart_shift: (source, dest) for a shift of `disp` along `dim`.
    pub fn cart_shift(&self, rank: i32, dim: usize, disp: i32) -> Result<(i32, i32)> {
        let Topology::Cart { dims, periods } = self else {
            return Err(not_cart());
        };
        if dim >= dims.len() {
            return Err(Error::Dims(format!(
                "dimension {dim} of a {}-dimensional grid",
                dims.len()
            )));
        }
        let coords = self.cart_coords(rank)?;
        let at = |delta: i32| -> i32 {
            let mut c = coords.clone();
            let v = c[dim] as i64 + delta as i64;
            let ext = dims[dim] as i64;
            if periods[dim] {
                c[dim] = v.rem_euclid(ext) as i32;
            } else if v < 0 || v >= ext {
                return PROC_NULL;
            } else {
                c[dim] = v as i32;
            }
            self.cart_rank(&c).unwrap_or(PROC_NULL)
        };
        Ok((at(-disp), at(disp)))
    }

    /// Neighbours of `rank` in a graph topology.
    pub fn graph_neighbors(&self, rank: i32) -> Result<Vec<i32>> {
        let Topology::Graph { index, edges } = self else {
            return Err(Error::Topology("not a graph topology".into()));
        };
        let n = index.len() as i32;
        if rank < 0 || rank >= n {
            return Err(Error::Rank { rank, size: n });
        }
        let lo = if rank == 0 {
            0
        } else {
            index[rank as usize - 1] as usize
        };
        Ok(edges[lo..index[rank as usize] as usize].to_vec())
    }

    /// The topology of the sub-grid keeping the dimensions in `remain`.
    pub fn cart_sub(&self, remain: &[bool]) -> Result<Topology> {
        let Topology::Cart { dims, periods } = self else {
            return Err(not_cart());
        };
        if remain.len() != dims.len() {
            return Err(Error::Arg(format!(
                "{} flags for a {}-dimensional grid",
                remain.len(),
                dims.len()
            )));
        }
        let keep = |v: &[i32]| -> Vec<i32> {
            v.iter()
                .zip(remain)
                .filter(|(_, &k)| k)
                .map(|(&x, _)| x)
                .collect()
        };
        Ok(Topology::Cart {
            dims: keep(dims),
            periods: periods
                .iter()
                .zip(remain)
                .filter(|(_, &k)| k)
                .map(|(&p, _)| p)
                .collect(),
        })
    }
}

fn not_cart() -> Error {
    Error::Topology("not a Cartesian topology".into())
}

/// MPI_Dims_create: fills the zero entries of `dims` so that the product is
/// `nnodes`, as balanced as possible, in non-increasing order.
pub fn compute_dims(nnodes: i32, dims: &[i32]) -> Result<Vec<i32>> {
    if nnodes < 0 {
        return Err(Error::Arg(format!("negative number of nodes {nnodes}")));
    }
    if let Some(d) = dims.iter().find(|&&d| d < 0) {
        return Err(Error::Dims(format!("negative dimension {d}")));
    }
    let fixed: i64 = dims.iter().filter(|&&d| d > 0).map(|&d| d as i64).product();
    let free: Vec<usize> = (0..dims.len()).filter(|&i| dims[i] == 0).collect();
    if nnodes == 0 {
        // Only all-free dims make sense for zero nodes; MPI gives zeros.
        return Ok(dims.iter().map(|_| 0).collect());
    }
    if fixed == 0 || nnodes as i64 % fixed != 0 {
        return Err(Error::Dims(format!(
            "{nnodes} processes do not divide into {dims:?}"
        )));
    }
    let mut rest = nnodes as i64 / fixed;
    let mut out = dims.to_vec();
    if free.is_empty() {
        if rest != 1 {
            return Err(Error::Dims(format!(
                "dimensions {dims:?} do not multiply to {nnodes}"
            )));
        }
        return Ok(out);
    }
    // Prime factors, largest first, each given to the currently smallest
    // free dimension: a balanced split.
    let mut factors = Vec::new();
    let mut p = 2;
    while p * p <= rest {
        while rest % p == 0 {
            factors.push(p);
            rest /= p;
        }
        p += 1;
    }
    if rest > 1 {
        factors.push(rest);
    }
    let mut sizes = vec![1i64; free.len()];
    for f in factors.into_iter().rev() {
        let i = (0..sizes.len())
            .min_by_key(|&i| sizes[i])
            .expect("at least one free dimension");
        sizes[i] *= f;
    }
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    for (slot, s) in free.into_iter().zip(sizes) {
        out[slot] = s as i32;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_are_balanced_and_non_increasing() {
        assert_eq!(compute_dims(6, &[0, 0]).unwrap(), vec![3, 2]);
        assert_eq!(compute_dims(12, &[0, 0, 0]).unwrap(), vec![3, 2, 2]);
        assert_eq!(compute_dims(16, &[0, 0]).unwrap(), vec![4, 4]);
        assert_eq!(compute_dims(6, &[0, 3, 0]).unwrap(), vec![2, 3, 1]);
        assert_eq!(compute_dims(1, &[0, 0, 0]).unwrap(), vec![1, 1, 1]);
        assert!(compute_dims(7, &[2, 0]).is_err());
    }

    #[test]
    fn cart_coordinates_and_shifts() {
        let t = Topology::cart(vec![2, 3], vec![true, false]).unwrap();
        assert_eq!(t.cart_coords(5).unwrap(), vec![1, 2]);
        assert_eq!(t.cart_rank(&[-1, 1]).unwrap(), 4);
        assert!(t.cart_rank(&[0, 3]).is_err());
        assert_eq!(t.cart_shift(0, 1, 1).unwrap(), (PROC_NULL, 1));
        assert_eq!(t.cart_shift(0, 0, 1).unwrap(), (3, 3));
        assert_eq!(t.neighbors(4).unwrap().0, vec![1, 1, 3, 5]);
    }
}
