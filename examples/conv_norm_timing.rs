//! Timing of certified conv norms: `cargo run --release --example conv_norm_timing -- C N K MODE RTOL`
//! (MODE = zeros | circular; `CONV_METHOD=bounds-only` etc. picks the method).
use lipschitz::conv::{conv2d_norm, Conv2d, ConvMethod, PaddingMode};
use lipschitz::Options;
use rand::{Rng, SeedableRng};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (c, n, k): (usize, usize, usize) = (
        a[0].parse().unwrap(),
        a[1].parse().unwrap(),
        a[2].parse().unwrap(),
    );
    let mode = if a[3] == "circular" {
        PaddingMode::Circular
    } else {
        PaddingMode::Zeros
    };
    let rtol: f64 = a[4].parse().unwrap();
    let conv = Conv2d::new(c, c, [k, k], [n, n]).padding(k / 2).mode(mode);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let bound = (1.0 / ((c * k * k) as f32)).sqrt();
    let w: Vec<f32> = (0..conv.weight_len())
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    if a.get(5).is_some_and(|v| v == "ri") {
        let t = std::time::Instant::now();
        let ri =
            lipschitz::conv::resolution_independent_bound(&conv, &w, 64, 20_000, 1e-3).unwrap();
        println!(
            "resolution-independent: {ri:?} in {:.3}s",
            t.elapsed().as_secs_f64()
        );
    }
    // CONV_METHOD=bounds-only|lanczos|… picks the method (default auto).
    let method: ConvMethod = std::env::var("CONV_METHOD")
        .map(|m| m.parse().unwrap())
        .unwrap_or(ConvMethod::Auto);
    let r = conv2d_norm(&w, &conv, method, &Options::with_rtol(rtol)).unwrap();
    println!(
        "{c}ch {n}² k{k} {mode:?} rtol {rtol:e}: [{:.8}, {:.8}] width {:.2e} {} {:?} it {} matvecs {} circ {:.8} window {:.8} freqs {}/{} {:.3}s limited_by {:?} classic {:?}",
        r.bound.lower, r.bound.upper, r.bound.relative_width(), r.bound.certificate.label(), r.bound.stop,
        r.bound.iterations, r.bound.matvecs, r.circular_upper, r.window_upper, r.frequencies_visited, r.frequencies_total, r.bound.seconds, r.limited_by, lipschitz::conv::classic_bounds(&conv, &w).unwrap()
    );
}
