//! Plain SVG line, step and scatter charts with axes, a legend and marked
//! times (faults), small enough to read in a browser or a pull request.

use std::fmt::Write as _;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 420.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 52.0;
/// Most points drawn per series (evenly thinned beyond).
const MAX_POINTS: usize = 4000;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Joined points.
    Line,
    /// A staircase (for distributions).
    Step,
    /// Dots.
    Dots,
}

/// One series.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
    /// Drawing style.
    pub style: Style,
    /// CSS colour.
    pub color: &'static str,
}

/// A chart.
#[derive(Debug, Clone, Default)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Series.
    pub series: Vec<Series>,
    /// Vertical lines at x, with labels.
    pub markers: Vec<(f64, String)>,
    /// Fixed x range.
    pub x_range: Option<(f64, f64)>,
    /// Fixed y range.
    pub y_range: Option<(f64, f64)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round step for about `target` ticks over `span`.
fn tick_step(span: f64, target: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / target;
    let magnitude = 10f64.powf(raw.log10().floor());
    let m = raw / magnitude;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 2.5 {
        2.5
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn label(v: f64) -> String {
    if v.abs() >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let step = points.len() as f64 / MAX_POINTS as f64;
    let mut out: Vec<(f64, f64)> = (0..MAX_POINTS).map(|i| points[(i as f64 * step) as usize]).collect();
    if let Some(last) = points.last() {
        out.push(*last);
    }
    out
}

impl Chart {
    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, f64::NEG_INFINITY);
        for &(x, y) in all {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        for (x, _) in &self.markers {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
        }
        if !x0.is_finite() || !x1.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        if !y1.is_finite() {
            y1 = 1.0;
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        (self.x_range.unwrap_or((x0, x1)), self.y_range.unwrap_or((y0, y1 * 1.05)))
    }

    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let ((x0, x1), (y0, y1)) = self.ranges();
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| TOP + ph - (y - y0) / (y1 - y0) * ph;
        let mut o = String::new();
        let _ = writeln!(
            o,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            o,
            r#"<text x="{}" y="24" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        // Grid and ticks.
        let xs = tick_step(x1 - x0, 8.0);
        let mut t = (x0 / xs).ceil() * xs;
        while t <= x1 + xs * 1e-9 {
            let x = sx(t);
            let _ = writeln!(o, r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/>"##, TOP + ph);
            let _ =
                writeln!(o, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, TOP + ph + 16.0, label(t));
            t += xs;
        }
        let ys = tick_step(y1 - y0, 6.0);
        let mut t = (y0 / ys).ceil() * ys;
        while t <= y1 + ys * 1e-9 {
            let y = sy(t);
            let _ = writeln!(o, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/>"##, LEFT + pw);
            let _ =
                writeln!(o, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, label(t));
            t += ys;
        }
        let _ =
            writeln!(o, r##"<rect x="{LEFT}" y="{TOP}" width="{pw:.1}" height="{ph:.1}" fill="none" stroke="#444"/>"##);
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            HEIGHT - 12.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            o,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        // Markers; labels of markers close together are staggered down.
        let mut last_px = f64::NEG_INFINITY;
        let mut stagger = 0.0;
        for (x, text) in &self.markers {
            if *x < x0 || *x > x1 {
                continue;
            }
            let px = sx(*x);
            stagger = if px - last_px < 12.0 { (stagger + 110.0) % (ph - 40.0).max(1.0) } else { 0.0 };
            last_px = px;
            let _ = writeln!(
                o,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#c0392b" stroke-dasharray="4 3"/>"##,
                TOP + ph
            );
            let _ = writeln!(
                o,
                r##"<text transform="translate({:.1} {:.1}) rotate(-90)" fill="#c0392b" font-size="10" text-anchor="end">{}</text>"##,
                px - 3.0,
                TOP + 4.0 + stagger,
                escape(text)
            );
        }
        // Series, clipped to the plot.
        let _ = writeln!(
            o,
            r#"<clipPath id="plot"><rect x="{LEFT}" y="{TOP}" width="{pw:.1}" height="{ph:.1}"/></clipPath><g clip-path="url(#plot)">"#
        );
        for s in &self.series {
            let points = thin(&s.points);
            match s.style {
                Style::Dots => {
                    for (x, y) in &points {
                        let _ = writeln!(
                            o,
                            r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{}" fill-opacity="0.6"/>"#,
                            sx(*x),
                            sy(*y),
                            s.color
                        );
                    }
                }
                Style::Line | Style::Step => {
                    let mut path = String::new();
                    let mut prev: Option<(f64, f64)> = None;
                    for (x, y) in &points {
                        let (px, py) = (sx(*x), sy(*y));
                        match prev {
                            None => {
                                let _ = write!(path, "{px:.1},{py:.1} ");
                            }
                            Some((_, qy)) if s.style == Style::Step => {
                                let _ = write!(path, "{px:.1},{qy:.1} {px:.1},{py:.1} ");
                            }
                            Some(_) => {
                                let _ = write!(path, "{px:.1},{py:.1} ");
                            }
                        }
                        prev = Some((px, py));
                    }
                    let _ = writeln!(
                        o,
                        r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.8"/>"#,
                        path.trim_end(),
                        s.color
                    );
                }
            }
        }
        let _ = writeln!(o, "</g>");
        // Legend.
        for (i, s) in self.series.iter().enumerate() {
            let y = TOP + 14.0 + i as f64 * 16.0;
            let x = LEFT + pw - 190.0;
            let _ = writeln!(o, r#"<rect x="{x:.1}" y="{:.1}" width="12" height="4" fill="{}"/>"#, y - 5.0, s.color);
            let _ = writeln!(o, r#"<text x="{:.1}" y="{y:.1}">{}</text>"#, x + 18.0, escape(&s.name));
        }
        o.push_str("</svg>\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_series_markers_and_escapes_text() {
        let chart = Chart {
            title: "a <b> & c".into(),
            x_label: "s".into(),
            y_label: "ms".into(),
            series: vec![
                Series { name: "one".into(), points: vec![(0.0, 1.0), (1.0, 3.0)], style: Style::Step, color: "red" },
                Series { name: "two".into(), points: vec![(0.5, 2.0)], style: Style::Dots, color: "blue" },
            ],
            markers: vec![(0.5, "kill p0001".into())],
            ..Chart::default()
        };
        let svg = chart.render();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(svg.contains("<polyline") && svg.contains("<circle") && svg.contains("kill p0001"));
        // A step series has a horizontal then a vertical segment per point.
        let line = svg.lines().find(|l| l.starts_with("<polyline")).unwrap_or_default();
        assert_eq!(line.matches(',').count(), 3);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0, 5.0), 20.0);
        assert_eq!(tick_step(7.0, 8.0), 1.0);
        assert!((tick_step(0.3, 6.0) - 0.05).abs() < 1e-12);
    }
}
