//! The report's PNG plots (plotters, bitmap backend; text through ab_glyph with a
//! system TrueType font registered once, so no fontconfig is needed).
//!
//! Two shapes only: a log-log chart of figures against a count (clients, watchers,
//! pods) with each point's min–max range drawn as a vertical bar, and a linear
//! timeline (puts per 100 ms window) with a vertical mark.

use std::path::Path;

use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::common::BenchResult;

/// The font family name the plots use.
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (900, 540);

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub color: RGBColor,
    /// (x, median)
    pub points: Vec<(f64, f64)>,
    /// (x, min, max) for the range bars; may be empty.
    pub band: Vec<(f64, f64, f64)>,
    /// A vertical mark (the timeline's compaction request), in x units.
    pub mark_x: Option<f64>,
}

pub fn color(server: &str) -> RGBColor {
    match server {
        "etcd" => RGBColor(0xd9, 0x5f, 0x02),
        "capstan-alt" => RGBColor(0x75, 0x70, 0xb3),
        _ => RGBColor(0x1b, 0x9e, 0x77),
    }
}

pub fn palette(i: usize) -> RGBColor {
    const P: [RGBColor; 4] = [
        RGBColor(0x1b, 0x9e, 0x77),
        RGBColor(0xd9, 0x5f, 0x02),
        RGBColor(0x75, 0x70, 0xb3),
        RGBColor(0xe7, 0x29, 0x8a),
    ];
    P[i % P.len()]
}

/// Registers `path` (a TTF) as the plots' font; the bytes live for the process.
pub fn register_font(path: &Path) -> BenchResult<()> {
    let bytes = std::fs::read(path).map_err(|e| {
        format!(
            "{}: {e} (the plots need a TrueType font: scripts/install-deps.sh bench installs \
             fonts-dejavu-core, or pass --font)",
            path.display()
        )
    })?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| format!("{}: not a usable TrueType font", path.display()))
}

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("plotting {}: {e}", path.display())
}

/// The smallest and largest of every point and range bar (positive values only).
fn bounds(series: &[Series]) -> Option<((f64, f64), (f64, f64))> {
    let mut xs = (f64::INFINITY, f64::NEG_INFINITY);
    let mut ys = (f64::INFINITY, f64::NEG_INFINITY);
    let mut grow = |x: f64, y: f64| {
        if x > 0.0 && y > 0.0 && x.is_finite() && y.is_finite() {
            xs = (xs.0.min(x), xs.1.max(x));
            ys = (ys.0.min(y), ys.1.max(y));
        }
    };
    for s in series {
        for &(x, y) in &s.points {
            grow(x, y);
        }
        for &(x, lo, hi) in &s.band {
            grow(x, lo);
            grow(x, hi);
        }
    }
    (xs.0.is_finite() && ys.0.is_finite()).then_some((xs, ys))
}

/// Draws the legend at `position` and writes the file.
fn finish<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    root: &DrawingArea<BitMapBackend<'a>, Shift>,
    position: SeriesLabelPosition,
    path: &Path,
) -> BenchResult<()> {
    chart
        .configure_series_labels()
        .label_font((FAMILY, 14))
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(position)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// An axis label: whole numbers without decimals, others with as few decimals as show
/// the value (up to six): 0.001, 0.25, 2.5.
fn short(v: f64) -> String {
    if v.abs() >= 10.0 || v.fract() == 0.0 {
        return format!("{v:.0}");
    }
    let decimals = (1..=6)
        .find(|&d| {
            let scale = 10f64.powi(d);
            ((v * scale).round() / scale - v).abs() <= 1e-9 * v.abs()
        })
        .unwrap_or(6) as usize;
    format!("{v:.decimals$}")
}

/// Figures against a count, both axes logarithmic.
pub fn log_log(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> BenchResult<()> {
    let Some(((x0, x1), (y0, y1))) = bounds(series) else {
        return Ok(());
    };
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((x0 / 1.5..x1 * 1.5).log_scale(), (y0 / 1.5..y1 * 1.5).log_scale())
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|x| short(*x))
        .y_label_formatter(&|y| short(*y))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(|e| err(path, e))?;
    for (i, s) in series.iter().enumerate() {
        // A second series of the same colour (a p99 beside a p50) is drawn dashed-looking
        // with hollow points, so the two stay apart in print.
        let solid = !series[..i].iter().any(|o| o.color == s.color);
        let style = ShapeStyle {
            color: s.color.to_rgba(),
            filled: solid,
            stroke_width: if solid { 2 } else { 1 },
        };
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(|e| err(path, e))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, style)))
            .map_err(|e| err(path, e))?;
        chart
            .draw_series(
                s.band
                    .iter()
                    .filter(|&&(_, lo, hi)| lo > 0.0 && hi > lo)
                    .map(|&(x, lo, hi)| PathElement::new(vec![(x, lo), (x, hi)], style)),
            )
            .map_err(|e| err(path, e))?;
    }
    finish(&mut chart, &root, SeriesLabelPosition::UpperLeft, path)
}

/// Figures over time, linear axes; each series' `mark_x` drawn as a vertical line.
pub fn timeline(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> BenchResult<()> {
    let x1 = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0f64, f64::max);
    let y1 = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    if x1 <= 0.0 || y1 <= 0.0 {
        return Ok(());
    }
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x1 * 1.02, 0.0..y1 * 1.1)
        .map_err(|e| err(path, e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|x| short(*x))
        .y_label_formatter(&|y| short(*y))
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .draw()
        .map_err(|e| err(path, e))?;
    for s in series {
        let color = s.color;
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))
            .map_err(|e| err(path, e))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if let Some(m) = s.mark_x {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(m, 0.0), (m, y1 * 1.1)],
                    color.mix(0.6).stroke_width(1),
                )))
                .map_err(|e| err(path, e))?;
        }
    }
    finish(&mut chart, &root, SeriesLabelPosition::LowerRight, path)
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn axis_labels_keep_small_values_apart() {
        assert_eq!(short(1.0), "1");
        assert_eq!(short(100.0), "100");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(0.001), "0.001");
        assert_eq!(short(0.01), "0.01");
        assert_eq!(short(1.0 / 3.0), "0.333333");
        assert_eq!(short(0.0), "0");
    }
}
