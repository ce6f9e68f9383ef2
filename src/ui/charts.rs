//! Charts drawn on the server as SVG: no chart library, nothing for the
//! browser to run. Geometry only: colours are attributes (a strict CSP
//! forbids inline `style`), sizes come from the stylesheet.

use maud::{html, Markup};

use super::history::{Ring, Usage, POINTS};

const W: f64 = POINTS as f64;
/// Points drawn at most: each is the largest of its share of the ring,
/// so a chart stays about 1 KB whatever the ring holds.
const DRAWN: usize = 125;
const H: f64 = 60.0;
const TOTAL: &str = "#1b1f24";
const RESERVED: &str = "#0b57d0";
const RESERVED_FILL: &str = "#c9dcfb";

/// `x,y` pairs of a series scaled to the chart, newest at the right.
fn points(r: &Ring, max: f64) -> Vec<(f64, f64)> {
    let values: Vec<f64> = r.iter().collect();
    let step = values.len().div_ceil(DRAWN).max(1);
    let offset = W - values.len() as f64;
    values
        .chunks(step)
        .enumerate()
        .map(|(i, bucket)| {
            let v = bucket.iter().copied().fold(f64::MIN, f64::max);
            let y = if max > 0.0 {
                H - (v / max).clamp(0.0, 1.0) * (H - 2.0)
            } else {
                H
            };
            (offset + ((i * step + bucket.len() - 1) as f64), y)
        })
        .collect()
}

fn path(pts: &[(f64, f64)]) -> String {
    let mut s = String::with_capacity(pts.len() * 8);
    for (i, (x, y)) in pts.iter().enumerate() {
        s.push_str(if i == 0 { "M" } else { "L" });
        s.push_str(&format!("{x:.0},{y:.0}"));
    }
    s
}

fn area(pts: &[(f64, f64)]) -> String {
    match (pts.first(), pts.last()) {
        (Some((x0, _)), Some((x1, _))) => format!("{}L{x1:.0},{H}L{x0:.0},{H}Z", path(pts)),
        _ => String::new(),
    }
}

/// Reserved (filled) against total (a line), with the figures in the
/// caption for those who cannot see the picture.
pub fn usage(title: &str, u: &Usage, unit: &str) -> Markup {
    // Headroom above the largest figure keeps the total's line in view.
    let max = u.total.max().max(u.reserved.max()) * 1.15;
    let now_total = u.total.last().unwrap_or(0.0);
    let now_reserved = u.reserved.last().unwrap_or(0.0);
    let caption = format!(
        "{title}: {} of {} {unit} reserved",
        figure(now_reserved),
        figure(now_total)
    );
    html! {
        figure.chart {
            figcaption { (caption) }
            svg.spark viewBox={ "0 0 " (W) " " (H) } preserveAspectRatio="none" role="img" aria-label=(caption) {
                path d=(area(&points(&u.reserved, max))) fill=(RESERVED_FILL) stroke=(RESERVED) stroke-width="1" {}
                path d=(path(&points(&u.total, max))) fill="none" stroke=(TOTAL) stroke-width="1.5" {}
            }
        }
    }
}

/// One series as a filled sparkline.
pub fn spark(title: &str, r: &Ring, unit: &str) -> Markup {
    let caption = format!("{title}: {} {unit}", figure(r.last().unwrap_or(0.0)));
    let pts = points(r, r.max() * 1.15);
    html! {
        figure.chart {
            figcaption { (caption) }
            svg.spark viewBox={ "0 0 " (W) " " (H) } preserveAspectRatio="none" role="img" aria-label=(caption) {
                path d=(area(&pts)) fill=(RESERVED_FILL) stroke=(RESERVED) stroke-width="1" {}
            }
        }
    }
}

/// A used-of-total bar, for table cells: the browser's own `<meter>`
/// (small, and read out by screen readers as a figure).
pub fn bar(used: f64, total: f64, label: &str) -> Markup {
    html! {
        meter min="0" max=(figure(total.max(0.0))) value=(figure(used.clamp(0.0, total.max(0.0)))) aria-label=(label) {}
    }
}

/// A figure with at most two decimals and no trailing zeros.
pub fn figure(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_scale_into_the_box() {
        let mut r = Ring::default();
        for v in [0.0, 5.0, 10.0] {
            r.push(v);
        }
        let pts = points(&r, 10.0);
        assert_eq!(pts.len(), 3);
        assert_eq!(pts[2].0, W - 1.0, "the newest point is at the right");
        assert_eq!(pts[0].1, H);
        assert_eq!(pts[2].1, 2.0);
        assert!(area(&pts).ends_with('Z'));
        assert_eq!(area(&[]), "");
    }

    #[test]
    fn a_full_ring_is_drawn_with_fewer_points_keeping_peaks() {
        let mut r = Ring::default();
        for i in 0..POINTS {
            r.push(if i == 301 { 100.0 } else { 1.0 });
        }
        let pts = points(&r, 100.0);
        assert_eq!(pts.len(), DRAWN);
        assert_eq!(pts.last().unwrap().0, W - 1.0);
        assert!(pts.iter().any(|p| p.1 == 2.0), "the peak survives");
        assert!(path(&pts).len() < 1200);
    }

    #[test]
    fn figures_are_short() {
        assert_eq!(figure(4.0), "4");
        assert_eq!(figure(0.5), "0.5");
        assert_eq!(figure(1.234), "1.23");
        assert_eq!(figure(1234.5), "1234");
    }

    #[test]
    fn a_chart_says_its_figures_in_words() {
        let mut u = Usage::default();
        u.total.push(8.0);
        u.reserved.push(2.0);
        let svg = usage("CPU", &u, "cores").into_string();
        assert!(svg.contains("CPU: 2 of 8 cores reserved"));
        assert!(svg.contains("role=\"img\""));
        assert!(!svg.contains("style="), "no inline style under the CSP");
    }
}
