//! Charts drawn on the server as SVG: no chart library, nothing for the
//! browser to run. Geometry only: colours are attributes (a strict CSP
//! forbids inline `style`), sizes come from the stylesheet.

use maud::{html, Markup};

use super::history::{Ring, Usage, POINTS};

const W: f64 = POINTS as f64;
const H: f64 = 60.0;
const TOTAL: &str = "#1b1f24";
const RESERVED: &str = "#0b57d0";
const RESERVED_FILL: &str = "#c9dcfb";

/// `x,y` pairs of a series scaled to the chart, newest at the right.
fn points(r: &Ring, max: f64) -> Vec<(f64, f64)> {
    let offset = W - r.len() as f64;
    r.iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if max > 0.0 {
                H - (v / max).clamp(0.0, 1.0) * (H - 2.0)
            } else {
                H
            };
            (offset + i as f64, y)
        })
        .collect()
}

fn path(pts: &[(f64, f64)]) -> String {
    let mut s = String::with_capacity(pts.len() * 12);
    for (i, (x, y)) in pts.iter().enumerate() {
        s.push_str(if i == 0 { "M" } else { "L" });
        s.push_str(&format!("{x:.0},{y:.1}"));
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

/// A used-of-total bar, for table cells.
pub fn bar(used: f64, total: f64, label: &str) -> Markup {
    let frac = if total > 0.0 {
        (used / total).clamp(0.0, 1.0)
    } else {
        0.0
    };
    html! {
        svg.bar viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label=(label) {
            rect x="0" y="0" width="100" height="10" fill="#e4e8ee" {}
            rect x="0" y="0" width=(format!("{:.1}", frac * 100.0)) height="10" fill=(RESERVED) {}
        }
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
