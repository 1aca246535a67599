//! Quick timing of one conv layer's operators: `cargo run --release --example conv_timing -- C N K [B]`.
use lipschitz::conv::{Conv2d, DirectConv2d, FftConv2d};
use lipschitz::LinearOperator;
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (c, n, k, b) = (args[0], args[1], args[2], *args.get(3).unwrap_or(&8));
    let conv = Conv2d::new(c, c, [k, k], [n, n]).padding(k / 2);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let w: Vec<f32> = (0..conv.weight_len())
        .map(|_| rng.random::<f32>() - 0.5)
        .collect();
    let x: Vec<f64> = (0..conv.input_len() * b)
        .map(|_| rng.random::<f64>() - 0.5)
        .collect();
    let t = Instant::now();
    let direct = DirectConv2d::new(&conv, &w).unwrap();
    println!("direct setup {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    let fft = FftConv2d::new(&conv, &w, 4 << 30).unwrap();
    println!(
        "fft setup {:.1} ms grid {:?} spectrum {} MB",
        t.elapsed().as_secs_f64() * 1e3,
        fft.grid(),
        fft.spectrum_bytes() >> 20
    );
    let (nin, nout) = (conv.input_len(), conv.output_len());
    let mut y = vec![0.0; nout * b];
    let mut xt = vec![0.0; nin * b];
    for (name, op) in [("direct", &direct as &dyn LinearOperator), ("fft", &fft)] {
        for _ in 0..2 {
            let t = Instant::now();
            op.forward(&x[..nin], &mut y[..nout]);
            let f1 = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            op.adjoint(&y[..nout], &mut xt[..nin]);
            let a1 = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            op.forward_block(&x, &mut y, b);
            op.adjoint_block(&y, &mut xt, b);
            let blk = t.elapsed().as_secs_f64() * 1e3 / b as f64;
            println!("{name}: forward {f1:.1} ms, adjoint {a1:.1} ms, block b={b} fwd+adj per vector {blk:.1} ms");
        }
    }
}
