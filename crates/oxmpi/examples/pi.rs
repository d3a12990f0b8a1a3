//! Monte Carlo estimate of pi on oxmpi, from Rust.
//!
//! Every rank throws its share of N random points into the unit square with
//! its own seeded generator and counts those inside the quarter circle; a
//! reduction sums the counts on rank 0, which prints the estimate.
//!
//! Build and run (from the repository root):
//!
//! ```text
//! cargo build --release --example pi -p oxmpi && mpiexec -n 4 target/release/examples/pi
//! mpiexec -n 4 target/release/examples/pi 100000000      # N points (default 10 million)
//! ```
//!
//! Run alone (`target/release/examples/pi`) it is a world of one rank.

use std::process::ExitCode;
use std::time::Instant;

use oxmpi::op::Predefined;

/// A 64-bit linear congruential generator (Knuth's MMIX constants); the
/// top 53 bits make a uniform double in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn new(seed: u64) -> Lcg {
        // Scramble the seed (splitmix64 finaliser) so nearby seeds diverge.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Lcg(z ^ (z >> 31))
    }

    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn count_hits(points: u64, seed: u64) -> u64 {
    let mut rng = Lcg::new(seed);
    let mut hits = 0;
    for _ in 0..points {
        let (x, y) = (rng.next_f64(), rng.next_f64());
        if x * x + y * y <= 1.0 {
            hits += 1;
        }
    }
    hits
}

fn main() -> ExitCode {
    let n: u64 = match std::env::args().nth(1).map(|a| a.parse::<f64>()) {
        None => 10_000_000,
        Some(Ok(v)) if v >= 1.0 => v as u64,
        Some(_) => {
            eprintln!("usage: pi [N > 0]");
            return ExitCode::from(2);
        }
    };

    let universe = oxmpi::init().expect("MPI initialisation failed");
    let world = universe.world();
    let (rank, size) = (world.rank() as u64, world.size() as u64);

    // N / size points each, the remainder one each to the lowest ranks.
    let mine = n / size + u64::from(rank < n % size);

    world.barrier().expect("barrier");
    let start = Instant::now();
    let local = [count_hits(mine, 0x5EED_0000 + rank)];
    let mut total = [0u64];
    world
        .reduce(&local, &mut total, Predefined::Sum, 0)
        .expect("reduce");
    // Everyone learns the slowest rank's time.
    let mut secs = [0f64];
    world
        .all_reduce(&[start.elapsed().as_secs_f64()], &mut secs, Predefined::Max)
        .expect("all_reduce");

    if rank == 0 {
        let est = 4.0 * total[0] as f64 / n as f64;
        let err = (est - std::f64::consts::PI).abs();
        println!(
            "pi ~= {est:.6}, error {err:.2e}, {n} points on {size} ranks in {:.3} s",
            secs[0]
        );
    }
    // MPI_Finalize: lets queued messages drain and tells the launcher we
    // are done.
    universe.engine().finalize().expect("finalize");
    ExitCode::SUCCESS
}
