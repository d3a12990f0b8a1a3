//! Runtime micro-benchmarks that need no launcher: the reduction kernels and
//! the self-send path (matching, unexpected queue, copies) of a world of one.
//!
//!     cargo bench -p oxmpi
//!
//! Multi-rank numbers come from `oxmpi bench` (see benches/README.md).

use std::hint::black_box;
use std::time::Instant;

use oxmpi::datatype::{Basic, Datatype};
use oxmpi::op::{Op, Predefined};

fn time<F: FnMut()>(name: &str, iters: u32, bytes: usize, mut f: F) {
    f();
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    let per = t.elapsed().as_secs_f64() / iters as f64;
    let gbps = if bytes > 0 {
        format!("  {:8.2} GB/s", bytes as f64 / per / 1e9)
    } else {
        String::new()
    };
    println!("{name:40} {:10.3} us{gbps}", per * 1e6);
}

fn main() {
    for &n in &[1usize << 10, 1 << 17, 1 << 20] {
        let a = vec![1.0f64; n];
        let mut b = vec![2.0f64; n];
        let dt = Datatype::new(Basic::F64);
        let op = Op::Predefined(Predefined::Sum);
        // SAFETY: viewing f64 slices as bytes.
        let (ab, bb) = unsafe {
            (
                std::slice::from_raw_parts(a.as_ptr().cast::<u8>(), n * 8),
                std::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<u8>(), n * 8),
            )
        };
        time(&format!("op SUM f64 x{n}"), 200, n * 8, || {
            op.apply(black_box(ab), bb, n, &dt).unwrap();
        });
    }
    let u = oxmpi::init().expect("init");
    let me = u.self_comm();
    for &n in &[8usize, 1 << 12, 1 << 20] {
        let s = vec![7u8; n];
        let mut r = vec![0u8; n];
        time(&format!("self send+recv {n} B"), 2000, n, || {
            me.send(black_box(&s), 0, 1).unwrap();
            me.recv(&mut r, 0, 1).unwrap();
        });
    }
}
