//! Rendering a report: the table, or one JSON object, written to stdout in one piece (a
//! closed or broken stdout is an error, not a panic or a silent success).

use lipschitz::network::{Analysis, NetworkMethod};

/// The process's peak resident memory so far (`getrusage`'s `ru_maxrss`, KiB on Linux),
/// `None` where it is not available.
pub(crate) fn peak_memory_bytes() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a rusage into the pointer it is given, which points to
        // zeroed memory of that type.
        let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
        if status != 0 {
            return None;
        }
        // SAFETY: initialised by the successful call (and zeroed before it).
        let kib = unsafe { usage.assume_init() }.ru_maxrss;
        let scale = if cfg!(target_os = "macos") { 1 } else { 1024 };
        u64::try_from(kib).ok().map(|k| k * scale)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Renders the report (table or JSON) and writes it to stdout in one piece; `explain` adds
/// each layer's route under its row.
pub(crate) fn print_report(report: &Analysis, json: bool, explain: bool) -> Result<(), String> {
    if json {
        let mut value = serde_json::to_value(report).map_err(|e| e.to_string())?;
        if let (Some(object), Some(peak)) = (value.as_object_mut(), peak_memory_bytes()) {
            object.insert("peak_memory_bytes".into(), peak.into());
        }
        let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        return write_stdout(&(text + "\n"));
    }
    let mut buf = String::new();
    macro_rules! println {
        ($($t:tt)*) => {{
            use std::fmt::Write as _;
            let _ = writeln!(buf, $($t)*);
        }};
    }
    println!("{}", report.model);
    println!("input shape {:?}\n", report.input_shape);
    // The source module (`layer1.0.conv1`) where the exporter recorded it, else the node.
    let label =
        |l: &lipschitz::network::LayerResult| l.module.clone().unwrap_or_else(|| l.name.clone());
    let width = report
        .layers
        .iter()
        .map(|l| label(l).chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 40);
    println!(
        "{:<width$} {:<7} {:>16} {:>16} {:>13} {:>13} {:<27} {:>8}",
        "layer", "op", "in", "out", "lower", "upper", "certificate", "time"
    );
    for l in &report.layers {
        let mut op = l.op.clone();
        if l.circular {
            op.push('°');
        }
        println!(
            "{:<width$} {:<7} {:>16} {:>16} {:>13.8} {:>13.8} {:<27} {:>7.3}s",
            label(l),
            op,
            shape(&l.input_shape),
            shape(&l.output_shape),
            l.lower,
            l.upper,
            l.certificate,
            l.seconds
        );
        if !l.folded.is_empty() {
            println!("{:<width$}   folded in: {}", "", l.folded.join(", "));
        }
        if explain {
            println!("{:<width$}   route: {}", "", l.route);
        }
    }
    if report.layers.iter().any(|l| l.circular) {
        println!("(° circular padding)");
    }
    network_summary(&mut buf, report);
    write_stdout(&buf)
}

/// The merged runs and the network bounds, under the layer table.
fn network_summary(buf: &mut String, report: &Analysis) {
    macro_rules! println {
        ($($t:tt)*) => {{
            use std::fmt::Write as _;
            let _ = writeln!(buf, $($t)*);
        }};
    }
    let n = &report.network;
    for run in &n.merged_runs {
        if run.upper < run.product {
            println!(
                "merged linear run {} : {:.8} (product of parts {:.8})",
                run.nodes.join(" → "),
                run.upper,
                run.product
            );
        }
    }
    println!("\nnetwork Lipschitz constant (ℓ2):");
    println!(
        "  upper bound      {:.8}  [{}] by {}",
        n.upper,
        n.certificate,
        method_name(n.method)
    );
    for m in n.methods.iter().filter(|m| m.name != n.method) {
        println!(
            "    {:<14} {:.8}  [{}] {:.3}s",
            method_name(m.name),
            m.upper,
            m.certificate,
            m.seconds
        );
    }
    println!(
        "  naive product    {:.8}  (the same composition without merged linear runs)",
        n.naive_product
    );
    match (n.lower, &n.lower_search) {
        (Some(l), Some(s)) => println!(
            "  lower bound      {:.8}  (attained by a pair of inputs; {} of {} starts in {:.2}s, budget {}s)\n  gap upper/lower  {:.3}",
            l,
            s.samples,
            s.samples_requested,
            s.seconds,
            s.budget_seconds,
            n.gap.unwrap_or(f64::INFINITY)
        ),
        (Some(l), None) => println!("  lower bound      {l:.8}"),
        _ => println!("  lower bound      not computed"),
    }
    for note in &n.notes {
        println!("  note: {note}");
    }
    match peak_memory_bytes() {
        Some(peak) => println!(
            "total time {:.3}s, peak memory {:.0} MB",
            report.seconds,
            peak as f64 / 1e6
        ),
        None => println!("total time {:.3}s", report.seconds),
    }
}

/// Writes to stdout, reporting failure (a closed pipe, a full disk) as an error instead of
/// panicking.
pub(crate) fn write_stdout(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the report to standard output: {e}"))
}

/// Whether file descriptor 1 was closed when the process started. Rust's runtime reopens a
/// closed stdout on `/dev/null` before `main` runs (so that output silently vanishes); this
/// constructor runs earlier, from `.init_array`, and sees the descriptor as the shell left it.
#[cfg(target_os = "linux")]
static STDOUT_WAS_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(target_os = "linux")]
extern "C" fn record_stdout_state() {
    // SAFETY: F_GETFD only queries the descriptor's flags.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } == -1 {
        STDOUT_WAS_CLOSED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static RECORD_STDOUT_STATE: extern "C" fn() = record_stdout_state;

/// A closed stdout is an error rather than a silent success.
pub(crate) fn check_stdout_open() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    if STDOUT_WAS_CLOSED.load(std::sync::atomic::Ordering::SeqCst) {
        return Err("standard output is closed; the report could not be written".into());
    }
    Ok(())
}

fn shape(s: &[usize]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

fn method_name(m: NetworkMethod) -> &'static str {
    m.label()
}
