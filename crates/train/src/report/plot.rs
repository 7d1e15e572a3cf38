//! PNG line charts for the report card, drawn without system fonts or network: an RGB canvas,
//! anti-aliased polylines (distance-to-segment coverage), the public-domain `font8x8` bitmap
//! font (ASCII, Latin-1 and Greek, so "β·KL" renders), and the `png` crate to encode.
//!
//! A chart is white, with a light grid at "nice" ticks (1-2-5 steps on a linear axis, decades —
//! and 2, 5 in between when the range spans at most two decades — on a log axis), tick labels,
//! a title, axis labels, one Okabe–Ito colour per series, markers when a series has at most
//! [`MARKER_MAX_POINTS`] points, and a legend placed in the corner of the plot that covers the
//! fewest drawn points. Points with a NaN or infinite coordinate (and, with `log_y`, a
//! non-positive y) are skipped and leave a gap in the line. A chart with no drawable point
//! renders "no data" instead of failing.

use std::path::Path;

use crate::{Error, Result};

/// Okabe–Ito colour-blind-safe palette, in the order series get them (yellow last: it is faint
/// on white).
pub const PALETTE: [[u8; 3]; 8] = [
    [0, 114, 178],   // blue
    [213, 94, 0],    // vermillion
    [0, 158, 115],   // bluish green
    [230, 159, 0],   // orange
    [204, 121, 167], // reddish purple
    [86, 180, 233],  // sky blue
    [0, 0, 0],       // black
    [240, 228, 66],  // yellow
];

/// A series with at most this many drawable points gets a marker on each point.
pub const MARKER_MAX_POINTS: usize = 30;

const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [20, 20, 20];
const AXIS: [u8; 3] = [70, 70, 70];
const GRID: [u8; 3] = [228, 228, 228];
const MUTED: [u8; 3] = [120, 120, 120];
/// Glyph cell of the bitmap font at scale 1, in pixels.
const CELL: i64 = 8;
const PAD: f64 = 10.0;
const TICK: i64 = 4;
/// Gap between the drawn box and where the axis range ends, so lines never hug the frame.
const INSET: f64 = 5.0;
const LINE_HALF_WIDTH: f64 = 0.9;
const MARKER_RADIUS: f64 = 2.6;

/// Colour of series `i` (the palette, cycled).
pub fn series_color(i: usize) -> [u8; 3] {
    PALETTE[i % PALETTE.len()]
}

/// One named line: `(x, y)` points drawn in the order given.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// A line chart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub log_y: bool,
}

impl Chart {
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Chart::default()
        }
    }

    /// Adds a series (builder style).
    pub fn with(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series::new(name, points));
        self
    }

    /// Whether point `(x, y)` can be drawn on this chart.
    pub fn drawable(&self, (x, y): (f64, f64)) -> bool {
        // Beyond 1e300 the range arithmetic overflows; such values are treated like inf.
        let ok = |v: f64| v.is_finite() && v.abs() < 1e300;
        ok(x) && ok(y) && (!self.log_y || y > 0.0)
    }
}

/// One axis: the data range drawn (`lo..hi`, already widened to tick values) and its ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
    pub ticks: Vec<f64>,
    /// Linear: the tick spacing. Log: unused (labels are formatted per tick).
    pub step: f64,
}

impl Axis {
    /// A linear axis covering `lo..=hi` with at most `max_ticks` (≥ 3) ticks at multiples of the
    /// smallest 1-2-5 step that allows it; the range is widened to the outer ticks. A
    /// (near-)constant range is padded by 10% of its value (±1 around zero).
    pub fn linear(lo: f64, hi: f64, max_ticks: usize) -> Axis {
        let (lo, hi) = pad_range(lo, hi);
        let max_ticks = max_ticks.max(3);
        let raw = (hi - lo) / (max_ticks - 1) as f64;
        let mut decade = 10f64.powf(raw.log10().floor());
        for _ in 0..12 {
            for m in [1.0, 2.0, 5.0] {
                let step = m * decade;
                if step < raw * (1.0 - 1e-9) {
                    continue;
                }
                // Snap quotients within rounding error of an integer (lo = 0.3, step = 0.1).
                let (qa, qb) = (lo / step, hi / step);
                let a = (qa + 1e-9 * qa.abs()).floor();
                let b = (qb - 1e-9 * qb.abs()).ceil();
                if b - a + 1.0 <= max_ticks as f64 {
                    let ticks = (0..=(b - a) as i64)
                        .map(|k| (a + k as f64) * step)
                        .collect();
                    return Axis {
                        lo: a * step,
                        hi: b * step,
                        log: false,
                        ticks,
                        step,
                    };
                }
            }
            decade *= 10.0;
        }
        Axis {
            lo,
            hi,
            log: false,
            ticks: vec![lo, hi],
            step: hi - lo,
        }
    }

    /// A log10 axis covering `lo..=hi` (both > 0), widened to whole decades. Ticks at every
    /// decade (every k-th when there are more than 8), plus 2× and 5× when the range spans at
    /// most two decades.
    pub fn log10(lo: f64, hi: f64) -> Axis {
        let mut a = (lo.log10() + 1e-9).floor() as i32;
        let mut b = (hi.log10() - 1e-9).ceil() as i32;
        if b <= a {
            a -= 1;
            b = a + 2;
        }
        let decades = b - a;
        let mut ticks = Vec::new();
        if decades <= 2 {
            for k in a..=b {
                for m in [1.0, 2.0, 5.0] {
                    if k < b || m == 1.0 {
                        ticks.push(m * 10f64.powi(k));
                    }
                }
            }
        } else {
            let stride = (decades + 7) / 8;
            b = a + stride * ((decades + stride - 1) / stride);
            ticks = (a..=b)
                .step_by(stride as usize)
                .map(|k| 10f64.powi(k))
                .collect();
        }
        Axis {
            lo: 10f64.powi(a),
            hi: 10f64.powi(b),
            log: true,
            ticks,
            step: 0.0,
        }
    }

    /// Position of `v` along the axis, 0 at `lo` and 1 at `hi`.
    pub fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }

    /// The label printed at tick `v`.
    pub fn label(&self, v: f64) -> String {
        if self.log {
            fmt_tick(v, v)
        } else {
            fmt_tick(v, self.step)
        }
    }
}

fn pad_range(lo: f64, hi: f64) -> (f64, f64) {
    if hi - lo > 1e-12 * lo.abs().max(hi.abs()) {
        return (lo, hi);
    }
    let c = 0.5 * (lo + hi);
    let d = if c == 0.0 { 1.0 } else { 0.1 * c.abs() };
    (c - d, c + d)
}

/// Formats a tick value with as many digits as its step needs; scientific below 1e-3 or from
/// 1e5 up ("2e-5", "1.2e6").
fn fmt_tick(v: f64, step: f64) -> String {
    let v = if v.abs() < step.abs() * 1e-6 { 0.0 } else { v };
    if v == 0.0 && !(1e-3..1e5).contains(&step.abs()) {
        return "0".into();
    }
    let step_mag = (step.abs().log10() + 1e-9).floor() as i32;
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        let mag = (v.abs().log10() + 1e-9).floor() as i32;
        format!("{:.*e}", (mag - step_mag).max(0) as usize, v)
    } else {
        format!("{:.*}", (-step_mag).max(0) as usize, v)
    }
}

/// Where data lands in the image: the axis ranges map onto `left..right` (x) and
/// `bottom..top` (y) in continuous pixel coordinates (pixel `(i, j)` covers `[i, i+1) ×
/// [j, j+1)`); the frame box is drawn [`INSET`] pixels outside that rectangle.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub left: f64,
    pub top: f64,
    pub right: f64,
    pub bottom: f64,
    pub x: Axis,
    pub y: Axis,
}

impl Frame {
    /// Pixel position of data point `(x, y)`; `None` for a point the chart does not draw.
    pub fn to_px(&self, x: f64, y: f64) -> Option<(f64, f64)> {
        let ok = x.is_finite() && y.is_finite() && (!self.y.log || y > 0.0);
        ok.then(|| {
            let px = self.left + self.x.frac(x) * (self.right - self.left);
            let py = self.bottom - self.y.frac(y) * (self.bottom - self.top);
            (px, py)
        })
    }
}

/// Margins that do not depend on the data: (top, bottom).
fn vertical_margins(chart: &Chart) -> (f64, f64) {
    let top = if chart.title.is_empty() {
        PAD
    } else {
        2.0 * PAD + 16.0
    };
    let x_label = if chart.x_label.is_empty() {
        0.0
    } else {
        CELL as f64 + 6.0
    };
    (
        top + INSET,
        PAD + x_label + CELL as f64 + 4.0 + TICK as f64 + INSET,
    )
}

fn left_margin(chart: &Chart, tick_label_px: f64) -> f64 {
    let y_label = if chart.y_label.is_empty() {
        0.0
    } else {
        CELL as f64 + 6.0
    };
    PAD + y_label + tick_label_px + 3.0 + TICK as f64 + INSET
}

const RIGHT_MARGIN: f64 = 2.0 * PAD + INSET;

/// Lays the chart out in a `width × height` image; `None` when it has no drawable point.
pub fn frame(chart: &Chart, width: u32, height: u32) -> Option<Frame> {
    let pts = chart.series.iter().flat_map(|s| s.points.iter().copied());
    let (mut xlo, mut xhi, mut ylo, mut yhi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts.filter(|&p| chart.drawable(p)) {
        (xlo, xhi, ylo, yhi) = (xlo.min(x), xhi.max(x), ylo.min(y), yhi.max(y));
    }
    if xlo > xhi {
        return None;
    }
    let (top, bottom_margin) = vertical_margins(chart);
    let bottom = height as f64 - bottom_margin;
    let y = if chart.log_y {
        Axis::log10(ylo, yhi)
    } else {
        Axis::linear(ylo, yhi, (((bottom - top) / 36.0) as usize).clamp(3, 11))
    };
    let widest = |a: &Axis| {
        a.ticks
            .iter()
            .map(|&t| text_width(&a.label(t), 1))
            .max()
            .unwrap_or(0)
    };
    let left = left_margin(chart, widest(&y) as f64);
    let right = width as f64 - RIGHT_MARGIN;
    let plot_w = (right - left).max(1.0);
    let mut n = ((plot_w / 40.0) as usize).clamp(3, 12);
    let x = loop {
        let axis = Axis::linear(xlo, xhi, n);
        let fits = (axis.ticks.len() as f64) * (widest(&axis) as f64 + 14.0) <= plot_w + 14.0;
        if fits || n == 3 {
            break axis;
        }
        n -= 1;
    };
    Some(Frame {
        left,
        top,
        right,
        bottom,
        x,
        y,
    })
}

/// Draws the chart as an RGB PNG of `width × height` pixels (width 160..=4096, height
/// 120..=4096).
pub fn render_png(chart: &Chart, width: u32, height: u32) -> Result<Vec<u8>> {
    if !(160..=4096).contains(&width) || !(120..=4096).contains(&height) {
        return Err(Error::Plot(format!(
            "image size {width}x{height} out of range (width 160..=4096, height 120..=4096)"
        )));
    }
    let mut c = Canvas::new(width as usize, height as usize);
    let (w, h) = (width as i64, height as i64);
    if !chart.title.is_empty() {
        let scale = if text_width(&chart.title, 2) <= w - 2 * PAD as i64 {
            2
        } else {
            1
        };
        let t = fit(&chart.title, w - 2 * PAD as i64, scale);
        c.text(
            (w - text_width(&t, scale)) / 2,
            PAD as i64 + (2 - scale) * 4,
            &t,
            scale,
            INK,
        );
    }
    match frame(chart, width, height) {
        Some(f) => draw_frame(&mut c, chart, &f),
        None => {
            let (top, bottom_margin) = vertical_margins(chart);
            let (l, r) = (left_margin(chart, 24.0), w as f64 - RIGHT_MARGIN);
            let (t, b) = (top, h as f64 - bottom_margin);
            c.rect_outline(l - INSET, t - INSET, r + INSET, b + INSET, AXIS);
            let msg = "no data";
            let (cx, cy) = (((l + r) / 2.0) as i64, ((t + b) / 2.0) as i64);
            c.text(cx - text_width(msg, 1) / 2, cy - CELL / 2, msg, 1, MUTED);
            axis_labels(&mut c, chart, l, t, r, b);
        }
    }
    encode(&c)
}

/// The image size [`write_png`] uses.
pub const DEFAULT_SIZE: (u32, u32) = (720, 420);

/// [`render_png`] at [`DEFAULT_SIZE`], written atomically (temp file beside `path`, fsync,
/// rename).
pub fn write_png(chart: &Chart, path: &Path) -> Result<()> {
    let bytes = render_png(chart, DEFAULT_SIZE.0, DEFAULT_SIZE.1)?;
    chatforge_data::atomic::write_atomic(path, &bytes).map_err(crate::error::io_at(path))
}

fn draw_frame(c: &mut Canvas, chart: &Chart, f: &Frame) {
    let (l, t, r, b) = (
        f.left - INSET,
        f.top - INSET,
        f.right + INSET,
        f.bottom + INSET,
    );
    for &v in &f.x.ticks {
        let px = (f.left + f.x.frac(v) * (f.right - f.left)).floor();
        c.fill(px, t, px + 1.0, b, GRID);
        c.fill(px, b, px + 1.0, b + TICK as f64, AXIS);
        let s = f.x.label(v);
        let x0 = (px as i64 - text_width(&s, 1) / 2).min(c.w as i64 - text_width(&s, 1));
        let x0 = x0.max(0);
        c.text(x0, b as i64 + TICK + 3, &s, 1, INK);
    }
    for &v in &f.y.ticks {
        let py = (f.bottom - f.y.frac(v) * (f.bottom - f.top)).floor();
        c.fill(l, py, r, py + 1.0, GRID);
        c.fill(l - TICK as f64, py, l, py + 1.0, AXIS);
        let s = f.y.label(v);
        c.text(
            l as i64 - TICK - 3 - text_width(&s, 1),
            py as i64 - CELL / 2 + 1,
            &s,
            1,
            INK,
        );
    }
    c.rect_outline(l, t, r, b, AXIS);
    axis_labels(c, chart, l, t, r, b);

    let mut covered = Vec::new(); // sampled pixels of every line, for legend placement
    let mut marked = vec![false; chart.series.len()];
    for (i, s) in chart.series.iter().enumerate() {
        let runs = runs(chart, f, &s.points);
        let n: usize = runs.iter().map(Vec::len).sum();
        marked[i] = n <= MARKER_MAX_POINTS;
        let mut cov = Coverage::new(c, (l, t, r + 1.0, b + 1.0));
        for run in &runs {
            for seg in run.windows(2) {
                cov.segment(seg[0], seg[1], LINE_HALF_WIDTH);
                let steps = (dist(seg[0], seg[1]) / 3.0).ceil().max(1.0) as usize;
                let t = |k: usize| k as f64 / steps as f64;
                covered.extend((0..steps).map(|k| lerp(seg[0], seg[1], t(k))));
            }
            for &p in run {
                if n <= MARKER_MAX_POINTS || run.len() == 1 {
                    cov.segment(p, p, MARKER_RADIUS);
                }
                covered.push(p);
            }
        }
        c.apply(&cov, series_color(i));
    }
    legend(c, chart, (l, t, r, b), &covered, &marked);
}

/// Splits a series into runs of consecutive drawable points, in pixel coordinates.
fn runs(chart: &Chart, f: &Frame, points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let (mut out, mut cur) = (Vec::new(), Vec::new());
    for &p in points {
        match f.to_px(p.0, p.1).filter(|_| chart.drawable(p)) {
            Some(q) => cur.push(q),
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn axis_labels(c: &mut Canvas, chart: &Chart, l: f64, t: f64, r: f64, b: f64) {
    if !chart.x_label.is_empty() {
        let s = fit(&chart.x_label, (r - l) as i64, 1);
        let x = ((l + r) / 2.0) as i64 - text_width(&s, 1) / 2;
        c.text(x, c.h as i64 - PAD as i64 - CELL, &s, 1, INK);
    }
    if !chart.y_label.is_empty() {
        let s = fit(&chart.y_label, (b - t) as i64, 1);
        let y = ((t + b) / 2.0) as i64 + text_width(&s, 1) / 2;
        c.text_up(PAD as i64, y, &s, INK);
    }
}

/// The legend box in the plot corner (TR, TL, BR, BL, in that preference) that covers the
/// fewest sampled line pixels; a series drawn with markers shows one in its swatch.
fn legend(
    c: &mut Canvas,
    chart: &Chart,
    (l, t, r, b): (f64, f64, f64, f64),
    covered: &[(f64, f64)],
    marked: &[bool],
) {
    let max_text = ((r - l) * 0.45) as i64 - 34;
    let entries: Vec<(usize, String)> = (chart.series.iter().enumerate())
        .filter(|(_, s)| !s.name.is_empty())
        .map(|(i, s)| (i, fit(&s.name, max_text, 1)))
        .collect();
    if entries.is_empty() || max_text < 3 * CELL {
        return;
    }
    let row = 13.0;
    let bw = (entries
        .iter()
        .map(|(_, s)| text_width(s, 1))
        .max()
        .unwrap_or(0)
        + 38) as f64;
    let bh = entries.len() as f64 * row + 8.0;
    if bh > b - t - 8.0 {
        return;
    }
    let corners = [
        (r - 6.0 - bw, t + 6.0),
        (l + 6.0, t + 6.0),
        (r - 6.0 - bw, b - 6.0 - bh),
        (l + 6.0, b - 6.0 - bh),
    ];
    let hits = |&(x0, y0): &(f64, f64)| {
        let inside = |&&(x, y): &&(f64, f64)| {
            x >= x0 - 3.0 && x <= x0 + bw + 3.0 && y >= y0 - 3.0 && y <= y0 + bh + 3.0
        };
        covered.iter().filter(inside).count()
    };
    let (x0, y0) = corners
        .iter()
        .min_by_key(|p| hits(p))
        .copied()
        .unwrap_or(corners[0]);
    c.fill(x0, y0, x0 + bw, y0 + bh, WHITE);
    c.rect_outline(x0, y0, x0 + bw, y0 + bh, [170, 170, 170]);
    for (k, (i, name)) in entries.iter().enumerate() {
        let cy = y0 + 4.0 + row * k as f64 + row / 2.0;
        let mut cov = Coverage::new(c, (x0, y0, x0 + bw, y0 + bh));
        cov.segment((x0 + 6.0, cy), (x0 + 26.0, cy), LINE_HALF_WIDTH);
        if marked[*i] {
            cov.segment((x0 + 16.0, cy), (x0 + 16.0, cy), MARKER_RADIUS);
        }
        c.apply(&cov, series_color(*i));
        c.text((x0 + 32.0) as i64, (cy - 4.0) as i64, name, 1, INK);
    }
}

// ---- raster -------------------------------------------------------------------------------------

struct Canvas {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            rgb: vec![255; w * h * 3],
        }
    }

    fn blend(&mut self, x: i64, y: i64, col: [u8; 3], a: f32) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 || a <= 0.0 {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        for (k, &ch) in col.iter().enumerate() {
            let old = self.rgb[i + k] as f32;
            self.rgb[i + k] = (old + (ch as f32 - old) * a.min(1.0)).round() as u8;
        }
    }

    /// Fills pixels whose index lies in `[x0, x1) × [y0, y1)` (bounds floored).
    fn fill(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, col: [u8; 3]) {
        for y in y0.floor() as i64..y1.floor() as i64 {
            for x in x0.floor() as i64..x1.floor() as i64 {
                self.blend(x, y, col, 1.0);
            }
        }
    }

    fn rect_outline(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, col: [u8; 3]) {
        self.fill(x0, y0, x1 + 1.0, y0 + 1.0, col);
        self.fill(x0, y1, x1 + 1.0, y1 + 1.0, col);
        self.fill(x0, y0, x0 + 1.0, y1, col);
        self.fill(x1, y0, x1 + 1.0, y1, col);
    }

    /// Text with its top-left corner at `(x, y)`.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, col: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            for (gy, bits) in glyph(ch).iter().enumerate() {
                for gx in 0..8 {
                    if bits >> gx & 1 == 1 {
                        for (dx, dy) in (0..scale).flat_map(|dx| (0..scale).map(move |dy| (dx, dy)))
                        {
                            let px = x + (i as i64 * CELL + gx) * scale + dx;
                            self.blend(px, y + gy as i64 * scale + dy, col, 1.0);
                        }
                    }
                }
            }
        }
    }

    /// Text rotated 90° counter-clockwise (reading upwards), its baseline-left corner at
    /// `(x, y_bottom)`.
    fn text_up(&mut self, x: i64, y_bottom: i64, s: &str, col: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            for (gy, bits) in glyph(ch).iter().enumerate() {
                for gx in 0..8 {
                    if bits >> gx & 1 == 1 {
                        self.blend(x + gy as i64, y_bottom - i as i64 * CELL - gx - 1, col, 1.0);
                    }
                }
            }
        }
    }

    fn apply(&mut self, cov: &Coverage, col: [u8; 3]) {
        for (i, &a) in cov.a.iter().enumerate() {
            if a > 0 {
                let (x, y) = (cov.x0 + i % cov.w, cov.y0 + i / cov.w);
                self.blend(x as i64, y as i64, col, a as f32 / 255.0);
            }
        }
    }
}

/// Per-pixel coverage (0..=255) of one series inside a clip rectangle: the max over its
/// segments, so joints are not drawn twice.
struct Coverage {
    x0: usize,
    y0: usize,
    w: usize,
    h: usize,
    a: Vec<u8>,
}

impl Coverage {
    /// Covers the pixels of `c` in `[x0, x1) × [y0, y1)` (bounds floored).
    fn new(c: &Canvas, (x0, y0, x1, y1): (f64, f64, f64, f64)) -> Coverage {
        let clamp = |v: f64, max: usize| (v.floor().max(0.0) as usize).min(max);
        let (x0, x1) = (clamp(x0, c.w), clamp(x1, c.w));
        let (y0, y1) = (clamp(y0, c.h), clamp(y1, c.h));
        let (w, h) = (x1.saturating_sub(x0), y1.saturating_sub(y0));
        Coverage {
            x0,
            y0,
            w,
            h,
            a: vec![0; w * h],
        }
    }

    /// A segment of half-width `r` with round caps (a disc when `p == q`).
    fn segment(&mut self, p: (f64, f64), q: (f64, f64), r: f64) {
        let span = |lo: f64, hi: f64, off: usize, n: usize| {
            let lo = ((lo - r - 1.0).floor() - off as f64).max(0.0) as usize;
            let hi = ((hi + r + 1.0).ceil() - off as f64).max(0.0) as usize;
            lo.min(n)..hi.min(n)
        };
        let xs = span(p.0.min(q.0), p.0.max(q.0), self.x0, self.w);
        for y in span(p.1.min(q.1), p.1.max(q.1), self.y0, self.h) {
            for x in xs.clone() {
                let centre = ((self.x0 + x) as f64 + 0.5, (self.y0 + y) as f64 + 0.5);
                let d = dist_to_segment(centre, p, q);
                let cover = ((r + 0.5 - d).clamp(0.0, 1.0) * 255.0).round() as u8;
                let cell = &mut self.a[y * self.w + x];
                *cell = (*cell).max(cover);
            }
        }
    }
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.0 - b.0).hypot(a.1 - b.1)
}

fn lerp(a: (f64, f64), b: (f64, f64), t: f64) -> (f64, f64) {
    (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
}

fn dist_to_segment(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    };
    dist(p, (a.0 + t * dx, a.1 + t * dy))
}

// ---- text ---------------------------------------------------------------------------------------

/// The 8×8 glyph of `ch`: ASCII, Latin-1 and Greek from `font8x8`, dashes as '-', '?' for
/// anything else. Row `y`, bit `x` (least significant = leftmost).
fn glyph(ch: char) -> [u8; 8] {
    use font8x8::legacy::{BASIC_LEGACY, GREEK_LEGACY, LATIN_LEGACY};
    let c = ch as usize;
    match c {
        0x20..=0x7e => BASIC_LEGACY[c],
        0xa1..=0xff => LATIN_LEGACY[c - 0xa0],
        0x390..=0x3c9 => GREEK_LEGACY[c - 0x390],
        0x2010..=0x2015 | 0x2212 => BASIC_LEGACY[b'-' as usize],
        _ if ch.is_whitespace() => BASIC_LEGACY[b' ' as usize],
        _ => BASIC_LEGACY[b'?' as usize],
    }
}

fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * CELL * scale
}

/// `s`, cut to at most `max_px` pixels wide with ".." marking the cut.
fn fit(s: &str, max_px: i64, scale: i64) -> String {
    let max_chars = (max_px / (CELL * scale)).max(0) as usize;
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars.saturating_sub(2)).collect();
    out.push_str("..");
    out
}

// ---- encoding -----------------------------------------------------------------------------------

fn encode(c: &Canvas) -> Result<Vec<u8>> {
    let err = |e: png::EncodingError| Error::Plot(format!("PNG encoding: {e}"));
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, c.w as u32, c.h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(err)?;
    writer.write_image_data(&c.rgb).map_err(err)?;
    writer.finish().map_err(err)?;
    Ok(out)
}
