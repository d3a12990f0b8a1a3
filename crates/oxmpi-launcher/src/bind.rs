//! Which CPUs each rank is pinned to (`--bind-to core|hwthread`).
//!
//! The binding units are taken from the CPUs the launcher itself may run
//! on (its affinity mask, so a job inside `taskset` or a cgroup cpuset
//! stays inside it): with `core`, the logical CPUs grouped by physical core
//! (Linux's `/sys/devices/system/cpu/cpuN/topology`); with `hwthread`, each
//! logical CPU alone. Units are ordered by their lowest CPU number. Rank `r`
//! with `pe` units per rank (`--map-by slot:pe=N`, default 1) gets units
//! `(r*pe + k) % units` for `k` in `0..pe`: consecutive ranks fill
//! consecutive cores, and more ranks than cores wrap around (several ranks
//! then share a core; oversubscription is never refused).
//!
//! The mask is applied in the child between fork and exec (`sys.rs`), so
//! the program starts pinned and every thread it creates inherits the mask.

use std::collections::BTreeMap;

use crate::args::Binding;
use crate::sys;

/// The binding units for `kind` on this machine, or why there are none.
/// `Binding::None` gives an empty list.
pub fn units(kind: Binding) -> Result<Vec<Vec<usize>>, String> {
    if kind == Binding::None {
        return Ok(Vec::new());
    }
    let cpus = sys::allowed_cpus().map_err(|e| format!("cannot read the CPU affinity: {e}"))?;
    if cpus.is_empty() {
        return Err("no CPU is available".into());
    }
    Ok(match kind {
        Binding::Core => {
            let topo: Vec<(usize, Option<CoreId>)> =
                cpus.iter().map(|&c| (c, core_of(c))).collect();
            group_cores(&topo)
        }
        _ => cpus.into_iter().map(|c| vec![c]).collect(),
    })
}

/// Identity of a physical core: (package, die, core) as numbered by Linux.
type CoreId = (i64, i64, i64);

fn core_of(cpu: usize) -> Option<CoreId> {
    let read = |what: &str| -> Option<i64> {
        let path = format!("/sys/devices/system/cpu/cpu{cpu}/topology/{what}");
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    Some((
        read("physical_package_id")?,
        read("die_id").unwrap_or(0),
        read("core_id")?,
    ))
}

/// Groups logical CPUs into cores; a CPU whose core is unknown is a core by
/// itself. The result is ordered by each core's lowest CPU, and each core's
/// CPUs are in increasing order.
pub fn group_cores(cpus: &[(usize, Option<CoreId>)]) -> Vec<Vec<usize>> {
    let mut by_core: BTreeMap<CoreId, Vec<usize>> = BTreeMap::new();
    let mut alone = Vec::new();
    for &(cpu, id) in cpus {
        match id {
            Some(id) => by_core.entry(id).or_default().push(cpu),
            None => alone.push(vec![cpu]),
        }
    }
    let mut units: Vec<Vec<usize>> = by_core.into_values().chain(alone).collect();
    for u in &mut units {
        u.sort_unstable();
    }
    units.sort_unstable_by_key(|u| u[0]);
    units
}

/// The CPUs of rank `rank` with `pe` units per rank, in increasing order.
pub fn cpus_for_rank(units: &[Vec<usize>], rank: usize, pe: usize) -> Vec<usize> {
    if units.is_empty() {
        return Vec::new();
    }
    let pe = pe.clamp(1, units.len());
    let first = rank.wrapping_mul(pe) % units.len();
    let mut cpus: Vec<usize> = (0..pe)
        .flat_map(|k| units[(first + k) % units.len()].iter().copied())
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_group_their_hardware_threads() {
        // Two cores with two threads each, numbered the Intel way
        // (cpu0 and cpu2 share core 0), plus one CPU of unknown topology.
        let topo = [
            (0, Some((0, 0, 0))),
            (1, Some((0, 0, 1))),
            (2, Some((0, 0, 0))),
            (3, Some((0, 0, 1))),
            (4, None),
        ];
        assert_eq!(group_cores(&topo), [vec![0, 2], vec![1, 3], vec![4]]);
        // Same core_id on two packages: two cores.
        let topo = [(0, Some((0, 0, 0))), (1, Some((1, 0, 0)))];
        assert_eq!(group_cores(&topo), [vec![0], vec![1]]);
    }

    #[test]
    fn ranks_fill_units_round_robin() {
        let units = vec![vec![0, 4], vec![1, 5], vec![2, 6], vec![3, 7]];
        assert_eq!(cpus_for_rank(&units, 0, 1), [0, 4]);
        assert_eq!(cpus_for_rank(&units, 3, 1), [3, 7]);
        // More ranks than cores: wrap around.
        assert_eq!(cpus_for_rank(&units, 5, 1), [1, 5]);
        // pe=2: rank r gets cores 2r and 2r+1.
        assert_eq!(cpus_for_rank(&units, 1, 2), [2, 3, 6, 7]);
        assert_eq!(cpus_for_rank(&units, 2, 2), [0, 1, 4, 5]);
        // pe larger than the machine: everything.
        assert_eq!(cpus_for_rank(&units, 1, 9), [0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(cpus_for_rank(&[], 0, 1).is_empty());
    }

    #[test]
    fn units_of_this_machine() {
        assert!(units(Binding::None).unwrap().is_empty());
        let threads = units(Binding::HwThread).unwrap();
        let cores = units(Binding::Core).unwrap();
        assert!(!threads.is_empty());
        assert!(!cores.is_empty() && cores.len() <= threads.len());
        let mut all: Vec<usize> = cores.concat();
        all.sort_unstable();
        assert_eq!(all, threads.concat());
    }
}
