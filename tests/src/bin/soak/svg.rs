//! The handover-time plot: one SVG with handover_us per generation as a line with a dot
//! per point, axes with ticks and labels, and cold generations marked.
//!
//! Owns only the drawing; it takes samples and returns a string, and never touches files.

use std::fmt::Write as _;

use crate::check::Sample;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;
/// Roughly how many ticks an axis gets.
const TICKS: u64 = 6;

/// A 1-2-5 step that cuts `0..=span` into about `TICKS` pieces.
fn nice_step(span: u64) -> u64 {
    let raw = span.div_ceil(TICKS).max(1);
    let mut magnitude = 1u64;
    while magnitude.saturating_mul(10) <= raw {
        magnitude *= 10;
    }
    [1, 2, 5, 10]
        .iter()
        .map(|m| m * magnitude)
        .find(|&step| step >= raw)
        .unwrap_or(10 * magnitude)
}

/// Axis end rounded up to a whole step, and the step: ticks at 0, step, .., end.
fn axis(max: u64) -> (u64, u64) {
    let step = nice_step(max.max(1));
    (max.max(1).div_ceil(step) * step, step)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the plot; `title` is shown above it.
pub fn render(samples: &[Sample], title: &str) -> String {
    let last_n = samples.last().map_or(0, |s| u64::from(s.n));
    let max_us = samples.iter().map(|s| s.handover_us).max().unwrap_or(0);
    let p = Plot::new(last_n, max_us);
    let mut out = String::new();
    header(&mut out, title);
    p.grid_and_axes(&mut out);
    p.labels(&mut out);
    p.data(&mut out, samples);
    legend(&mut out);
    // `write!` into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(out, "</svg>");
    out
}

/// The plot area and its axes' ends and tick steps.
struct Plot {
    x_end: u64,
    x_step: u64,
    y_end: u64,
    y_step: u64,
    w: f64,
    h: f64,
}

impl Plot {
    fn new(last_n: u64, max_us: u64) -> Self {
        let (x_end, x_step) = axis(last_n);
        let (y_end, y_step) = axis(max_us);
        Plot {
            x_end,
            x_step,
            y_end,
            y_step,
            w: WIDTH - LEFT - RIGHT,
            h: HEIGHT - TOP - BOTTOM,
        }
    }

    fn x(&self, n: u64) -> f64 {
        LEFT + self.w * n as f64 / self.x_end as f64
    }

    fn y(&self, us: u64) -> f64 {
        TOP + self.h - self.h * us as f64 / self.y_end as f64
    }

    fn bottom(&self) -> f64 {
        TOP + self.h
    }

    fn x_ticks(&self) -> impl Iterator<Item = u64> {
        (0..=self.x_end).step_by(self.x_step as usize)
    }

    fn y_ticks(&self) -> impl Iterator<Item = u64> {
        (0..=self.y_end).step_by(self.y_step as usize)
    }

    /// Grid lines, the two axes and their ticks.
    fn grid_and_axes(&self, out: &mut String) {
        let bottom = self.bottom();
        let _ = writeln!(out, r##"<g stroke="#ddd" stroke-width="1">"##);
        for tick in self.y_ticks() {
            let ty = self.y(tick);
            let _ = writeln!(
                out,
                r#"<line x1="{LEFT}" y1="{ty:.1}" x2="{:.1}" y2="{ty:.1}"/>"#,
                WIDTH - RIGHT
            );
        }
        let _ = writeln!(out, "</g>");
        let _ = writeln!(out, r##"<g stroke="black" stroke-width="1">"##);
        let _ = writeln!(
            out,
            r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}"/>"#
        );
        let _ = writeln!(
            out,
            r#"<line x1="{LEFT}" y1="{bottom}" x2="{:.1}" y2="{bottom}"/>"#,
            WIDTH - RIGHT
        );
        for tick in self.x_ticks() {
            let tx = self.x(tick);
            let _ = writeln!(
                out,
                r#"<line x1="{tx:.1}" y1="{bottom}" x2="{tx:.1}" y2="{}"/>"#,
                bottom + 5.0
            );
        }
        for tick in self.y_ticks() {
            let ty = self.y(tick);
            let _ = writeln!(
                out,
                r#"<line x1="{}" y1="{ty:.1}" x2="{LEFT}" y2="{ty:.1}"/>"#,
                LEFT - 5.0
            );
        }
        let _ = writeln!(out, "</g>");
    }

    /// Tick labels and axis titles.
    fn labels(&self, out: &mut String) {
        let bottom = self.bottom();
        let _ = writeln!(out, r#"<g fill="black">"#);
        for tick in self.x_ticks() {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{tick}</text>"#,
                self.x(tick),
                bottom + 19.0
            );
        }
        for tick in self.y_ticks() {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{tick}</text>"#,
                LEFT - 8.0,
                self.y(tick) + 4.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">generation</text>"#,
            LEFT + self.w / 2.0,
            HEIGHT - 12.0
        );
        let _ = writeln!(
            out,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">handover time (µs)</text>"#,
            TOP + self.h / 2.0,
            TOP + self.h / 2.0
        );
        let _ = writeln!(out, "</g>");
    }

    /// The data: one polyline point per generation, then the cold generations on top.
    fn data(&self, out: &mut String, samples: &[Sample]) {
        let points: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", self.x(u64::from(s.n)), self.y(s.handover_us)))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1" points="{}"/>"##,
            points.join(" ")
        );
        let _ = writeln!(out, r##"<g fill="#d62728">"##);
        for s in samples.iter().filter(|s| s.cold) {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5"><title>generation {} booted cold</title></circle>"#,
                self.x(u64::from(s.n)),
                self.y(s.handover_us),
                s.n
            );
        }
        let _ = writeln!(out, "</g>");
    }
}

/// The document, its background and the title.
fn header(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
}

/// The legend above the plot.
fn legend(out: &mut String) {
    let _ = writeln!(
        out,
        r##"<g font-size="11"><line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="#1f77b4"/><text x="{}" y="{}">handover_us</text><circle cx="{}" cy="{ly}" r="3.5" fill="#d62728"/><text x="{}" y="{}">cold boot</text></g>"##,
        LEFT + 36.0,
        LEFT + 42.0,
        TOP - 6.0 + 4.0,
        LEFT + 140.0,
        LEFT + 148.0,
        TOP - 6.0 + 4.0,
        lx = LEFT + 12.0,
        ly = TOP - 6.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(count: u32) -> Vec<Sample> {
        (0..count)
            .map(|n| Sample {
                n,
                cold: n == 0 || n == 500,
                handover_us: if n == 0 { 0 } else { 800 + u64::from(n % 37) },
            })
            .collect()
    }

    /// The `points` attribute of the one polyline in `svg`.
    fn polyline_points(svg: &str) -> Vec<&str> {
        let start = svg.find("<polyline").expect("a polyline");
        let attr = &svg[start..];
        let from = attr.find("points=\"").expect("points attribute") + "points=\"".len();
        let to = from + attr[from..].find('"').expect("closing quote");
        attr[from..to].split_whitespace().collect()
    }

    /// Opening and closing tags pair up, in order.
    fn tags_balance(svg: &str) -> bool {
        let mut stack: Vec<&str> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                return false;
            };
            let tag = &rest[open + 1..open + close];
            rest = &rest[open + close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                if stack.pop() != Some(name) {
                    return false;
                }
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap_or(""));
            }
        }
        stack.is_empty()
    }

    #[test]
    fn plot_is_well_formed_with_one_point_per_generation() {
        let svg = render(&samples(1000), "virt seed 1 <&>");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(tags_balance(&svg));
        assert_eq!(polyline_points(&svg).len(), 1000);
        assert_eq!(svg.matches("booted cold").count(), 2);
        assert!(svg.contains("virt seed 1 &lt;&amp;&gt;"));
        assert!(svg.contains(">generation</text>"));
    }

    #[test]
    fn points_stay_inside_the_plot_area() {
        let svg = render(&samples(300), "t");
        for point in polyline_points(&svg) {
            let (px, py) = point.split_once(',').expect("x,y");
            let px: f64 = px.parse().expect("number");
            let py: f64 = py.parse().expect("number");
            assert!((LEFT..=WIDTH - RIGHT).contains(&px), "{point}");
            assert!((TOP..=HEIGHT - BOTTOM).contains(&py), "{point}");
        }
    }

    #[test]
    fn single_and_empty_runs_still_render() {
        let svg = render(&samples(1), "one");
        assert_eq!(polyline_points(&svg).len(), 1);
        assert!(tags_balance(&svg));
        let svg = render(&[], "none");
        assert!(tags_balance(&svg));
    }

    #[test]
    fn ticks_follow_one_two_five() {
        assert_eq!(axis(999), (1000, 200));
        assert_eq!(axis(1234), (1500, 500));
        assert_eq!(axis(0), (1, 1));
        assert_eq!(axis(7), (8, 2));
        assert_eq!(nice_step(60), 10);
    }
}
