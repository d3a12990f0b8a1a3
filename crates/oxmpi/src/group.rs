//! Process groups (MPI-4.1 §7.3): an ordered set of processes, named by
//! their job ranks (their ranks in `COMM_WORLD`). Groups are plain local
//! data; only communicator creation from a group involves other processes.

use std::sync::Arc;

use crate::backend::{PROC_NULL, UNDEFINED};
use crate::error::{Error, Result};

/// Result of comparing two groups or communicators (MPI_IDENT, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Same members in the same order (for communicators: the same handle).
    Ident = 0,
    /// Communicators only: same members in the same order, different context.
    Congruent = 1,
    /// Same members, different order.
    Similar = 2,
    Unequal = 3,
}

/// An ordered set of distinct processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Job rank of each member, by group rank.
    members: Arc<[i32]>,
}

impl Group {
    /// A group of the given job ranks, which must be distinct.
    pub fn new(members: Vec<i32>) -> Result<Group> {
        let mut seen = members.clone();
        seen.sort_unstable();
        if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::Rank {
                rank: w[0],
                size: members.len() as i32,
            });
        }
        Ok(Group {
            members: members.into(),
        })
    }

    /// MPI_GROUP_EMPTY.
    pub fn empty() -> Group {
        Group {
            members: Arc::from(Vec::new()),
        }
    }

    pub fn size(&self) -> i32 {
        self.members.len() as i32
    }

    /// Job ranks of the members, in group order.
    pub fn members(&self) -> &[i32] {
        &self.members
    }

    /// The group rank of the process with job rank `job_rank`.
    pub fn rank_of(&self, job_rank: i32) -> Option<i32> {
        self.members
            .iter()
            .position(|&m| m == job_rank)
            .map(|p| p as i32)
    }

    fn check_rank(&self, r: i32) -> Result<()> {
        if r < 0 || r >= self.size() {
            return Err(Error::Rank {
                rank: r,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// MPI_Group_incl: the members with the given ranks, in that order.
    pub fn incl(&self, ranks: &[i32]) -> Result<Group> {
        for &r in ranks {
            self.check_rank(r)?;
        }
        Group::new(ranks.iter().map(|&r| self.members[r as usize]).collect())
    }

    /// MPI_Group_excl: the members without the given ranks, in group order.
    pub fn excl(&self, ranks: &[i32]) -> Result<Group> {
        let mut drop = vec![false; self.members.len()];
        for &r in ranks {
            self.check_rank(r)?;
            if std::mem::replace(&mut drop[r as usize], true) {
                return Err(Error::Rank {
                    rank: r,
                    size: self.size(),
                });
            }
        }
        Ok(Group {
            members: self
                .members
                .iter()
                .zip(&drop)
                .filter(|(_, &d)| !d)
                .map(|(&m, _)| m)
                .collect(),
        })
    }

    /// Expands (first, last, stride) triplets into ranks (MPI §7.3.2).
    fn expand_ranges(&self, ranges: &[(i32, i32, i32)]) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        for &(first, last, stride) in ranges {
            if stride == 0 {
                return Err(Error::Arg("a rank range has stride 0".into()));
            }
            self.check_rank(first)?;
            self.check_rank(last)?;
            if (stride > 0 && first > last) || (stride < 0 && first < last) {
                // An empty range is allowed only when it names no rank.
                continue;
            }
            let mut r = first;
            while (stride > 0 && r <= last) || (stride < 0 && r >= last) {
                out.push(r);
                r += stride;
            }
        }
        Ok(out)
    }

    /// MPI_Group_range_incl.
    pub fn range_incl(&self, ranges: &[(i32, i32, i32)]) -> Result<Group> {
        let ranks = self.expand_ranges(ranges)?;
        self.incl(&ranks)
    }

    /// MPI_Group_range_excl.
    pub fn range_excl(&self, ranges: &[(i32, i32, i32)]) -> Result<Group> {
        let ranks = self.expand_ranges(ranges)?;
        self.excl(&ranks)
    }

    /// MPI_Group_union: the members of `self`, then those of `other` not
    /// in `self`.
    pub fn union(&self, other: &Group) -> Group {
        let mut v = self.members.to_vec();
        v.extend(other.members.iter().filter(|m| !self.members.contains(m)));
        Group { members: v.into() }
    }

    /// MPI_Group_intersection: the members of `self` also in `other`, in
    /// `self`'s order.
    pub fn intersection(&self, other: &Group) -> Group {
        Group {
            members: self
                .members
                .iter()
                .filter(|m| other.members.contains(m))
                .copied()
                .collect(),
        }
    }

    /// MPI_Group_difference: the members of `self` not in `other`.
    pub fn difference(&self, other: &Group) -> Group {
        Group {
            members: self
                .members
                .iter()
                .filter(|m| !other.members.contains(m))
                .copied()
                .collect(),
        }
    }

    /// MPI_Group_translate_ranks: the rank in `other` of each of `ranks`
    /// (UNDEFINED where absent; PROC_NULL stays PROC_NULL).
    pub fn translate_ranks(&self, ranks: &[i32], other: &Group) -> Result<Vec<i32>> {
        ranks
            .iter()
            .map(|&r| {
                if r == PROC_NULL {
                    return Ok(PROC_NULL);
                }
                self.check_rank(r)?;
                Ok(other.rank_of(self.members[r as usize]).unwrap_or(UNDEFINED))
            })
            .collect()
    }

    /// MPI_Group_compare.
    pub fn compare(&self, other: &Group) -> Comparison {
        if self.members == other.members {
            return Comparison::Ident;
        }
        let (mut a, mut b) = (self.members.to_vec(), other.members.to_vec());
        a.sort_unstable();
        b.sort_unstable();
        if a == b {
            Comparison::Similar
        } else {
            Comparison::Unequal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(v: &[i32]) -> Group {
        Group::new(v.to_vec()).unwrap()
    }

    #[test]
    fn set_operations_keep_mpi_order() {
        let a = g(&[3, 1, 4]);
        let b = g(&[4, 0, 3]);
        assert_eq!(a.union(&b).members(), &[3, 1, 4, 0]);
        assert_eq!(a.intersection(&b).members(), &[3, 4]);
        assert_eq!(a.difference(&b).members(), &[1]);
        assert_eq!(a.compare(&g(&[4, 3, 1])), Comparison::Similar);
        assert_eq!(a.compare(&a.clone()), Comparison::Ident);
        assert_eq!(a.compare(&b), Comparison::Unequal);
    }

    #[test]
    fn ranges_and_translation() {
        let w = g(&[0, 1, 2, 3, 4, 5]);
        assert_eq!(w.range_incl(&[(5, 1, -2)]).unwrap().members(), &[5, 3, 1]);
        assert_eq!(w.range_excl(&[(0, 4, 2)]).unwrap().members(), &[1, 3, 5]);
        assert!(w.incl(&[1, 1]).is_err());
        assert!(w.excl(&[6]).is_err());
        let odd = w.incl(&[5, 3, 1]).unwrap();
        assert_eq!(
            w.translate_ranks(&[1, 2, 3, PROC_NULL], &odd).unwrap(),
            vec![2, UNDEFINED, 1, PROC_NULL]
        );
    }
}
