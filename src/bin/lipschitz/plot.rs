//! The certified-accuracy-vs-ε curve as an SVG image (plotters).

use lipschitz::certify::Certification;
use plotters::prelude::*;

/// Certified accuracy as a function of ε, one line per radius kind, with the requested ε
/// marked.
pub(crate) fn accuracy_curve(report: &Certification) -> Result<String, String> {
    let kinds = curves(report);
    let largest_eps = report.eps.iter().copied().fold(0.0, f64::max);
    let mut radii: Vec<f64> = kinds.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    radii.sort_by(f64::total_cmp);
    let typical = radii
        .get((radii.len() as f64 * 0.95) as usize)
        .or(radii.last())
        .copied()
        .unwrap_or(1.0);
    let x_max = (1.1 * typical).max(1.2 * largest_eps).clamp(1e-6, 1e6);
    let n = report.n.max(1) as f64;
    let accuracy = |r: &[f64], e: f64| 100.0 * r.iter().filter(|&&x| x >= e).count() as f64 / n;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let name = std::path::Path::new(&report.model)
            .file_name()
            .map_or(report.model.clone(), |n| n.to_string_lossy().into_owned());
        let title = format!(
            "{name}: certified accuracy (ℓ2), {} samples, L ≤ {:.4}",
            report.n, report.lipschitz.upper
        );
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..100.0)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("ε (ℓ2 radius)")
            .y_desc("certified accuracy (%)")
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_error)?;
        let colours = [
            RGBColor(31, 119, 180),
            RGBColor(214, 39, 40),
            RGBColor(44, 160, 44),
        ];
        for ((name, r), colour) in kinds.iter().zip(colours) {
            let points = (0..=400).map(|k| {
                let e = x_max * k as f64 / 400.0;
                (e, accuracy(r, e))
            });
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(draw_error)?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(
                    report
                        .eps
                        .iter()
                        .map(|&e| Circle::new((e, accuracy(r, e)), 4, colour.filled())),
                )
                .map_err(draw_error)?;
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// The radii of the correctly classified samples, per kind (misclassified ones are never
/// certified).
fn curves(report: &Certification) -> Vec<(&'static str, Vec<f64>)> {
    let correct: Vec<_> = report
        .samples
        .iter()
        .filter(|s| s.predicted == s.label)
        .collect();
    let mut kinds = vec![(
        "global (margin / √2·L)",
        correct.iter().map(|s| s.radius_global).collect(),
    )];
    if report.certified_accuracy.pairwise.is_some() {
        kinds.push((
            "pairwise (margin_j / L_ŷj)",
            correct.iter().filter_map(|s| s.radius_pairwise).collect(),
        ));
    }
    if report.certified_accuracy.local.is_some() {
        kinds.push((
            "local",
            correct.iter().filter_map(|s| s.radius_local).collect(),
        ));
    }
    kinds
}

fn draw_error(e: impl std::fmt::Display) -> String {
    format!("cannot draw the plot: {e}")
}
