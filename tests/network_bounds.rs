//! Network bounds beyond the product: the LipLT recursion against the same recursion
//! evaluated on explicit matrices with an independent SVD (faer), and every method against
//! the lower bound a pair of inputs attains.

mod common;

use faer::Mat;
use lipschitz::network::{
    analyze, empirical_lower_bound, Activation, AnalysisOptions, LowerOptions, Network,
    NetworkBuilder, NetworkMethod,
};
use lipschitz::onnx::{load_onnx, ImportOptions};
use lipschitz::Options;
use std::path::Path;

/// σ₁ of a product of row-major `f32` matrices (applied first to last), in `f64`.
fn product_norm(layers: &[(Vec<f32>, usize, usize)]) -> f64 {
    let mut p: Option<Mat<f64>> = None;
    for (w, rows, cols) in layers {
        let m = Mat::<f64>::from_fn(*rows, *cols, |i, j| w[i * cols + j] as f64);
        p = Some(match p {
            None => m,
            Some(q) => &m * &q,
        });
    }
    p.expect("at least one layer").singular_values().unwrap()[0]
}

/// A dense chain `W₁ σ W₂ σ … W_n` with seeded Gaussian weights.
fn mlp(sizes: &[usize], act: Activation, seed: u64) -> (Network, Vec<(Vec<f32>, usize, usize)>) {
    let mut b = NetworkBuilder::new("mlp", &[1, sizes[0]]).unwrap();
    let mut layers = Vec::new();
    for (i, pair) in sizes.windows(2).enumerate() {
        let (cols, rows) = (pair[0], pair[1]);
        let w: Vec<f32> = common::gaussian_matrix(rows, cols, seed + i as u64)
            .iter()
            .map(|v| v / (cols as f32).sqrt())
            .collect();
        b.dense(w.clone(), rows, cols, None).unwrap();
        if i + 2 < sizes.len() {
            b.activation(act).unwrap();
        }
        layers.push((w, rows, cols));
    }
    (b.finish(), layers)
}

fn analyse(net: &Network) -> lipschitz::network::Analysis {
    let opts = AnalysisOptions {
        layer: Options::with_rtol(1e-9),
        ..AnalysisOptions::default()
    };
    analyze(net, &opts).unwrap()
}

#[test]
fn liplt_matches_the_recursion_on_explicit_matrices() {
    // (activation, m, r) with slopes in [m − r, m + r].
    let cases = [
        (Activation::Relu, 0.5, 0.5),
        (Activation::LeakyRelu(0.1), 0.55, 0.45),
        // Slopes in [1 − c, c] (c = 1.0999 and 1.1290, the constants).
        (Activation::Silu, 0.5, 0.5999),
        (Activation::Gelu { tanh: false }, 0.5, 0.6290),
        (Activation::Tanh, 0.5, 0.5),
        (Activation::Sigmoid, 0.125, 0.125),
    ];
    for (seed, (act, m, r)) in cases.into_iter().enumerate() {
        let (net, w) = mlp(&[8, 16, 16, 4], act, 100 + 10 * seed as u64);
        // L₀ = ‖W₁‖, L₁ = m‖W₂W₁‖ + r‖W₂‖L₀, L₂ = m²‖W₃W₂W₁‖ + r·m‖W₃W₂‖L₀ + r‖W₃‖L₁.
        let n = |a: usize, b: usize| product_norm(&w[a..=b]);
        let l0 = n(0, 0);
        let l1 = m * n(0, 1) + r * n(1, 1) * l0;
        let l2 = m * m * n(0, 2) + r * m * n(1, 2) * l0 + r * n(2, 2) * l1;
        let a = analyse(&net);
        let liplt = a
            .network
            .methods
            .iter()
            .find(|x| x.name == NetworkMethod::LipLT)
            .unwrap_or_else(|| panic!("{act:?}: no LipLT bound"));
        assert!(
            liplt.upper >= l2 * (1.0 - 1e-12) && liplt.upper <= l2 * (1.0 + 1e-8),
            "{act:?}: LipLT {} vs the recursion on explicit matrices {l2}",
            liplt.upper
        );
        assert!(liplt.upper < a.network.naive_product, "{act:?}");
        assert!(a.network.upper <= liplt.upper, "{act:?}");
        let lower = a.network.lower.unwrap();
        assert!(
            lower <= liplt.upper,
            "{act:?}: attained {lower} above {}",
            liplt.upper
        );
    }
}

#[test]
fn every_method_stays_above_the_attained_lower_bound_and_the_smallest_is_reported() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let mut tighter = Vec::new();
    for name in ["mlp", "cnn_bn", "residual", "circular", "fire"] {
        let net = load_onnx(&dir.join(format!("{name}.onnx")), &ImportOptions::default()).unwrap();
        let a = analyse(&net);
        let n = &a.network;
        let lower = n.lower.unwrap();
        for m in &n.methods {
            assert!(
                m.upper >= lower,
                "{name}: {:?} {} below the attained {lower}",
                m.name,
                m.upper
            );
        }
        let smallest = n
            .methods
            .iter()
            .map(|m| m.upper)
            .fold(f64::INFINITY, f64::min);
        assert_eq!(n.upper, smallest, "{name}");
        assert!(n.upper <= n.naive_product, "{name}");
        if n.method != NetworkMethod::Product {
            tighter.push(name);
        }
    }
    // Every fixture with a nonlinearity gains, residual block and fire module (Concat)
    // included.
    assert_eq!(tighter, ["mlp", "cnn_bn", "residual", "circular", "fire"]);
}

#[test]
fn one_lipschitz_cnns_get_bounds_below_one_and_the_product() {
    // Trained by scripts/certify_models.py with every layer projected onto spectral norm
    // ≤ 1: ReLU, and GroupSort-2 written as b + relu(a − b), a − relu(a − b) (the product
    // of that form is 11.7, far above 1).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/certify");
    for name in ["lip_cnn", "gs_cnn"] {
        let net = load_onnx(&dir.join(format!("{name}.onnx")), &ImportOptions::default()).unwrap();
        let a = analyse(&net);
        let n = &a.network;
        let lower = n.lower.unwrap();
        let product = n.methods[0].upper;
        assert_eq!(n.methods[0].name, NetworkMethod::Product);
        assert_eq!(n.method, NetworkMethod::LipSdp, "{name}");
        assert!(
            n.upper < 1.0 && n.upper < product,
            "{name}: {} vs {product}",
            n.upper
        );
        assert!(
            n.upper >= lower && n.upper < 1.2 * lower,
            "{name}: {} vs {lower}",
            n.upper
        );
    }
}

#[test]
fn a_network_without_activations_has_no_liplt_bound() {
    let mut b = NetworkBuilder::new("linear", &[1, 6]).unwrap();
    b.dense(common::gaussian_matrix(5, 6, 7), 5, 6, None)
        .unwrap();
    b.dense(common::gaussian_matrix(3, 5, 8), 3, 5, None)
        .unwrap();
    let a = analyse(&b.finish());
    assert_eq!(a.network.methods.len(), 1);
    assert_eq!(a.network.method, NetworkMethod::Product);
}

#[test]
fn liplt_halves_the_product_on_the_demo_network() {
    // The demo: conv-BN-ReLU stem, a residual block, max pooling, a strided conv, global
    // average pooling, a dense head (measured: product 28.9, LipLT 12.9).
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bin/lipschitz/demo.onnx");
    let net = load_onnx(&path, &ImportOptions::default()).unwrap();
    let a = analyze(&net, &AnalysisOptions::default()).unwrap();
    let n = &a.network;
    assert_eq!(n.method, NetworkMethod::LipLT);
    assert!(
        n.upper < 0.5 * n.naive_product,
        "LipLT {} vs product {}",
        n.upper,
        n.naive_product
    );
    assert!(n.lower.unwrap() <= n.upper);
}

/// A row-major `f32` matrix as a faer matrix.
fn mat(w: &[f32], rows: usize, cols: usize) -> Mat<f64> {
    Mat::<f64>::from_fn(rows, cols, |i, j| w[i * cols + j] as f64)
}

fn sigma(m: &Mat<f64>) -> f64 {
    m.singular_values().unwrap()[0]
}

#[test]
fn liplt_through_a_residual_connection_matches_explicit_matrices() {
    // x → W₁ → ReLU(a) = h → W₂ → ReLU(b) → W₃ → (+ h) → W₄.
    let g = |rows, cols, seed| -> Vec<f32> {
        common::gaussian_matrix(rows, cols, seed)
            .iter()
            .map(|v| v / (cols as f32).sqrt())
            .collect()
    };
    let (w1, w2, w3, w4) = (g(8, 6, 1), g(8, 8, 2), g(8, 8, 3), g(3, 8, 4));
    let mut b = NetworkBuilder::new("residual", &[1, 6]).unwrap();
    b.dense(w1.clone(), 8, 6, None).unwrap();
    let h = b.activation(Activation::Relu).unwrap();
    b.dense(w2.clone(), 8, 8, None).unwrap();
    b.activation(Activation::Relu).unwrap();
    b.dense(w3.clone(), 8, 8, None).unwrap();
    b.add(h).unwrap();
    b.dense(w4.clone(), 3, 8, None).unwrap();
    let a = analyse(&b.finish());
    // σ = ½·id + ½·ψ. The linearised maps and the recursion, on explicit matrices.
    let (m1, m2, m3, m4) = (
        mat(&w1, 8, 6),
        mat(&w2, 8, 8),
        mat(&w3, 8, 8),
        mat(&w4, 3, 8),
    );
    let (m, r) = (0.5, 0.5);
    let eye = Mat::<f64>::identity(8, 8);
    let l_z1 = sigma(&m1);
    let l_u = sigma(&(&m2 * &m1 * m)) + r * sigma(&m2) * l_z1;
    let through_x = &m4 * &(&m3 * &m2 * &m1 * (m * m) + &m1 * m);
    let through_a = &m4 * &(&m3 * &m2 * m + &eye);
    let through_b = &m4 * &m3;
    let want = sigma(&through_x) + r * sigma(&through_a) * l_z1 + r * sigma(&through_b) * l_u;
    let liplt = a
        .network
        .methods
        .iter()
        .find(|x| x.name == NetworkMethod::LipLT)
        .expect("LipLT applies to residual graphs");
    assert!(
        liplt.upper >= want * (1.0 - 1e-12) && liplt.upper <= want * (1.0 + 1e-8),
        "LipLT {} vs explicit {want}",
        liplt.upper
    );
    assert!(a.network.lower.unwrap() <= liplt.upper);
}

/// The default search reaches 0.98 × the best of 20 long independent ascents
/// (`examples/lower_reference.rs`, committed in `tests/fixtures/lower_reference.json`) on
/// every fixture whose 20 starts fit the default time budget.
#[test]
fn default_lower_bound_reaches_the_reference_ascents() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/lower_reference.json").unwrap(),
    )
    .unwrap();
    for (file, best) in reference.as_object().unwrap() {
        let net = load_onnx(
            format!("tests/fixtures/onnx/{file}").as_ref(),
            &ImportOptions::default(),
        )
        .unwrap();
        let found = empirical_lower_bound(&net, &LowerOptions::default()).unwrap();
        let best = best.as_f64().unwrap();
        assert_eq!(found.samples, LowerOptions::default().samples, "{file}");
        assert!(
            found.value >= 0.98 * best,
            "{file}: default search {} < 0.98 × reference {best}",
            found.value
        );
    }
}

/// Every entry of a reference file (`{"model.onnx": {...}}`) with its model loaded from
/// `tests/fixtures/onnx/`.
fn reference_models(path: &str) -> Vec<(String, serde_json::Value, Network)> {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    reference
        .as_object()
        .unwrap()
        .iter()
        .map(|(file, r)| {
            let net = load_onnx(
                format!("tests/fixtures/onnx/{file}").as_ref(),
                &ImportOptions::default(),
            )
            .unwrap();
            (file.clone(), r.clone(), net)
        })
        .collect()
}

/// [`reference_models`] with each model's analysis.
fn analysed_references(
    path: &str,
) -> Vec<(String, serde_json::Value, lipschitz::network::Analysis)> {
    reference_models(path)
        .into_iter()
        .map(|(file, r, net)| {
            let a = analyse(&net);
            (file, r, a)
        })
        .collect()
}

/// The verified LipSDP-Neuron bound agrees with an independent solver (cvxpy with Clarabel
/// or SCS, `scripts/lipsdp_reference.py`) on a random MLP and two MLPs trained on digits,
/// and is the network's bound there.
#[test]
fn lipsdp_matches_an_independent_solver() {
    for (file, r, a) in analysed_references("tests/fixtures/lipsdp/reference.json") {
        let sdp = a
            .network
            .methods
            .iter()
            .find(|m| m.name == NetworkMethod::LipSdp)
            .unwrap_or_else(|| panic!("{file}: no LipSDP-Neuron bound"));
        let want = r["lipsdp"].as_f64().unwrap();
        assert!(
            (sdp.upper - want).abs() <= 2e-3 * want,
            "{file}: verified {} vs the solver's {want}",
            sdp.upper
        );
        assert_eq!(a.network.method, NetworkMethod::LipSdp, "{file}");
        assert!(a.network.lower.unwrap() <= sdp.upper, "{file}");
    }
}

/// ECLipsE-Fast agrees with the published recursion run in numpy on the same weights
/// (`scripts/eclipse_reference.py`), lies above the verified LipSDP-Neuron optimum, and is
/// tighter than LipLT on these MLPs.
#[test]
fn eclipse_fast_matches_the_published_recursion() {
    for (file, r, a) in analysed_references("tests/fixtures/lipsdp/eclipse.json") {
        let method = |name| {
            a.network
                .methods
                .iter()
                .find(|m| m.name == name)
                .unwrap_or_else(|| panic!("{file}: no {name:?} bound"))
                .upper
        };
        let eclipse = method(NetworkMethod::Eclipse);
        let want = r["eclipse_fast"].as_f64().unwrap();
        // The least ρ for its scaled multipliers may lie a little below the recursion's
        // (`eclipse.rs`), never above it beyond rounding.
        assert!(
            eclipse <= want * (1.0 + 1e-6) && eclipse >= want * (1.0 - 1e-3),
            "{file}: verified {eclipse} vs the published recursion's {want}"
        );
        assert!(method(NetworkMethod::LipSdp) <= eclipse, "{file}");
        assert!(eclipse < method(NetworkMethod::LipLT), "{file}");
        assert!(a.network.lower.unwrap() <= eclipse, "{file}");
    }
}

/// The LipLT recursion of a chain `A_K σ ⋯ σ A_0` on explicit matrices, with σ = m·I + r·ψ:
/// `L_i = m^i‖A_i⋯A_0‖ + Σ_{j<i} r·m^{i−1−j}‖A_i⋯A_{j+1}‖·L_j`, the last `L` the bound.
fn liplt_chain(a: &[Mat<f64>], m: f64, r: f64) -> f64 {
    let product = |from: usize, to: usize| {
        let mut p = a[from].clone();
        for x in &a[from + 1..=to] {
            p = x * &p;
        }
        sigma(&p)
    };
    let mut l: Vec<f64> = Vec::new();
    for i in 0..a.len() {
        let mut v = m.powi(i as i32) * product(0, i);
        for (j, lj) in l.iter().enumerate() {
            v += r * m.powi((i - 1 - j) as i32) * product(j + 1, i) * lj;
        }
        l.push(v);
    }
    *l.last().unwrap()
}

/// The LipLT recursion of a chain cut into segments of at most `k` activations, as the
/// budget cuts it: the first segment from the input through the linear map after its
/// `k`-th ReLU, each further one starting at a ReLU (identity first).
fn liplt_chain_in_segments(a: &[Mat<f64>], k: usize) -> f64 {
    let mut bound = liplt_chain(&a[..(k + 1).min(a.len())], 0.5, 0.5);
    let mut next = k + 1;
    while next < a.len() {
        let mut segment = vec![Mat::<f64>::identity(a[next].ncols(), a[next].ncols())];
        segment.extend(a[next..(next + k).min(a.len())].iter().cloned());
        bound *= liplt_chain(&segment, 0.5, 0.5);
        next += k;
    }
    bound
}

/// A 5-6×15-3 ReLU chain (15 ReLUs, more than one segment's 12) and its matrices.
fn deep_chain() -> (Network, Vec<Mat<f64>>) {
    let mut sizes = vec![6; 17];
    sizes[0] = 5;
    sizes[16] = 3;
    let (net, w) = mlp(&sizes, Activation::Relu, 300);
    let a = w.iter().map(|(w, r, c)| mat(w, *r, *c)).collect();
    (net, a)
}

/// A chain deeper than one segment's budget (15 ReLUs > 12) is cut where the budget ends:
/// the first segment runs from the input to the 13th linear map, the second from there
/// (identity first) to the output, and the bound is the product of the two recursions.
#[test]
fn liplt_cuts_a_deep_chain_into_segments() {
    let (net, a) = deep_chain();
    let want = liplt_chain_in_segments(&a, 12);
    let got = analyse(&net);
    let liplt = got
        .network
        .methods
        .iter()
        .find(|m| m.name == NetworkMethod::LipLT)
        .expect("LipLT in segments");
    assert!(
        liplt.upper >= want * (1.0 - 1e-12) && liplt.upper <= want * (1.0 + 1e-8),
        "LipLT {} vs two segments on explicit matrices {want}",
        liplt.upper
    );
    assert!(liplt.upper < got.network.naive_product);
    assert!(got.network.lower.unwrap() <= got.network.upper);
}

/// Under a smaller work budget LipLT cuts the chain into shorter segments (and says so)
/// rather than giving up: every budget's bound is the explicit recursion over the segments
/// its note names, below the product and above the attained lower bound; under the
/// shortest segments' work it is skipped with a note.
#[test]
fn liplt_shortens_its_segments_to_fit_the_budget() {
    let (net, a) = deep_chain();
    let mut lengths = Vec::new();
    for budget in [1e9, 3e3, 1e3, 400.0, 150.0, 1.0] {
        let opts = AnalysisOptions {
            layer: Options::with_rtol(1e-9),
            liplt_max_work: budget as u128,
            ..AnalysisOptions::default()
        };
        let got = analyze(&net, &opts).unwrap();
        let notes = &got.network.notes;
        let liplt = got
            .network
            .methods
            .iter()
            .find(|m| m.name == NetworkMethod::LipLT);
        let Some(liplt) = liplt else {
            assert!(
                notes.iter().any(|n| n.starts_with("LipLT not computed")),
                "budget {budget}: {notes:?}"
            );
            lengths.push(0);
            continue;
        };
        // "LipLT: 8 segments of at most 2 nonlinear nodes, shortened …", or no note when the
        // longest segments fit.
        let k = notes
            .iter()
            .find_map(|n| n.strip_prefix("LipLT: "))
            .map_or(12, |n| {
                let at_most = n.split("at most ").nth(1).unwrap();
                at_most.split(' ').next().unwrap().parse::<usize>().unwrap()
            });
        let want = liplt_chain_in_segments(&a, k);
        assert!(
            liplt.upper >= want * (1.0 - 1e-12) && liplt.upper <= want * (1.0 + 1e-8),
            "budget {budget}: LipLT {} vs segments of {k} on explicit matrices {want}",
            liplt.upper
        );
        assert!(liplt.upper < got.network.naive_product);
        assert!(got.network.lower.unwrap() <= liplt.upper);
        lengths.push(k);
    }
    assert_eq!(lengths.first(), Some(&12), "{lengths:?}");
    assert_eq!(lengths.last(), Some(&0), "{lengths:?}");
    assert!(
        lengths.iter().any(|&k| (1..12).contains(&k)),
        "no budget shortened the segments: {lengths:?}"
    );
}

/// The first-order eigenvalue method (used above the interior point's size limit, forced
/// here) proves bounds within 1 % of the independent solver's optimum on the same networks,
/// never below it, and says which solver ran.
#[test]
fn first_order_lipsdp_is_near_the_independent_optimum() {
    for (file, r, net) in reference_models("tests/fixtures/lipsdp/reference.json") {
        let opts = AnalysisOptions {
            lower: None,
            methods: vec![NetworkMethod::Product, NetworkMethod::LipSdp],
            lipsdp_interior_max_size: 0,
            ..AnalysisOptions::default()
        };
        let a = analyze(&net, &opts).unwrap();
        let sdp = a
            .network
            .methods
            .iter()
            .find(|m| m.name == NetworkMethod::LipSdp)
            .unwrap_or_else(|| panic!("{file}: no LipSDP-Neuron bound"));
        let want = r["lipsdp"].as_f64().unwrap();
        // The references are solver optima to ~2e-4 (SCS): allow that much below.
        assert!(
            sdp.upper >= want * (1.0 - 2e-3) && sdp.upper <= want * 1.01,
            "{file}: first-order {} vs the solver's {want}",
            sdp.upper
        );
        assert!(
            a.network.notes.iter().any(|n| n.contains("first-order")),
            "{file}: {:?}",
            a.network.notes
        );
    }
}
