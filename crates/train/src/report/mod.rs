//! The report card's building blocks: PNG line charts ([`plot`]), GitHub-markdown tables and
//! number formatting.

pub mod plot;

pub use plot::{
    frame, render_png, series_color, write_png, Axis, Chart, Frame, Series, DEFAULT_SIZE,
    MARKER_MAX_POINTS, PALETTE,
};

/// A GitHub-flavoured markdown table. Pipes in cells are escaped (`\|`) and line breaks become
/// spaces, so a cell never splits the row; short rows are padded with empty cells and the
/// header is widened (with empty names) when a row is longer. Ends with a newline.
pub fn md_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = rows
        .iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0);
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::from("|");
        for cell in cells.chain(std::iter::repeat("")).take(cols) {
            let cell = cell
                .replace('|', "\\|")
                .replace("\r\n", " ")
                .replace(['\n', '\r'], " ");
            out.push(' ');
            out.push_str(cell.trim());
            out.push_str(" |");
        }
        out.push('\n');
        out
    };
    let mut out = line(&mut header.iter().copied());
    out.push('|');
    out.push_str(&"---|".repeat(cols));
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// A number for a table: 4 significant digits with trailing zeros dropped ("0.8125", "12.35",
/// "1235", "0.5"), scientific below 1e-3 or from 1e6 up ("1.235e-4", "2.5e6"), "–" for NaN and
/// "inf"/"-inf" for infinities.
pub fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        return "–".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if !(1e-3..1e6).contains(&a) {
        let s = format!("{x:.3e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        return format!("{}e{exp}", trim_zeros(mantissa));
    }
    let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
    trim_zeros(&format!("{x:.decimals$}")).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}
