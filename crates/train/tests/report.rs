//! Report-card charts and tables: the PNG decodes at the requested size, series pixels lie where
//! the exposed data→pixel mapping says, ticks are nice, gaps and empty charts render, and the
//! markdown helpers escape and format.

use chatforge_train::report::{
    fmt_num, frame, md_table, render_png, write_png, Axis, Chart, Series, PALETTE,
};

/// Decoded RGB image.
struct Img {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Img {
    fn at(&self, x: i64, y: i64) -> Option<[u8; 3]> {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 {
            return None;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        Some([self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]])
    }

    /// Whether a pixel within `r` of `(x, y)` has (nearly) colour `col`.
    fn has_near(&self, (x, y): (f64, f64), col: [u8; 3], r: i64) -> bool {
        let (x, y) = (x.floor() as i64, y.floor() as i64);
        (-r..=r).any(|dy| (-r..=r).any(|dx| self.at(x + dx, y + dy).is_some_and(|p| close(p, col))))
    }

    fn count(&self, col: [u8; 3]) -> usize {
        self.rgb
            .chunks(3)
            .filter(|p| close([p[0], p[1], p[2]], col))
            .count()
    }
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter()
        .zip(b)
        .all(|(&x, y)| (x as i32 - y as i32).abs() <= 12)
}

fn decode(bytes: &[u8]) -> Img {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = dec.read_info().expect("PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    Img {
        w: info.width as usize,
        h: info.height as usize,
        rgb: buf,
    }
}

fn line(name: &str, a: (f64, f64), b: (f64, f64), n: usize) -> Series {
    let pts = (0..n).map(|i| {
        let t = i as f64 / (n - 1) as f64;
        (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t)
    });
    Series::new(name, pts.collect())
}

#[test]
fn png_decodes_with_requested_size() {
    let chart = Chart::new("loss", "step", "nats").with("train", vec![(0.0, 3.0), (100.0, 1.5)]);
    for (w, h) in [(640, 400), (321, 199), (1200, 700)] {
        let img = decode(&render_png(&chart, w, h).unwrap());
        assert_eq!((img.w, img.h), (w as usize, h as usize));
        assert_eq!(img.at(0, 0), Some([255, 255, 255]), "white background");
    }
    // The smallest size, with labels far too long for it: truncated, no panic.
    let long = "a very long label that cannot possibly fit in a small image ".repeat(3);
    let mut small = Chart::new(&long, &long, &long).with(&long, vec![(0.0, 1e9), (1.0, -1e9)]);
    small.series.push(Series::new("b", vec![(0.5, 0.0)]));
    let img = decode(&render_png(&small, 160, 120).unwrap());
    assert_eq!((img.w, img.h), (160, 120));
    assert!(render_png(&chart, 10, 400).is_err(), "too small");
    assert!(render_png(&chart, 640, 100_000).is_err(), "too large");
}

#[test]
fn series_pixels_follow_the_data_mapping() {
    // Two crossing lines with many points (no markers) and one short series with markers.
    let chart = Chart::new("two lines", "x", "y")
        .with("up", line("", (0.0, 0.0), (10.0, 10.0), 200).points)
        .with("down", line("", (0.0, 10.0), (10.0, 0.0), 200).points);
    let (w, h) = (640, 400);
    let f = frame(&chart, w, h).unwrap();
    let img = decode(&render_png(&chart, w, h).unwrap());
    for k in 3..=7 {
        let t = k as f64 / 10.0;
        if k == 5 {
            continue; // the crossing: either colour may be on top
        }
        let up = f.to_px(10.0 * t, 10.0 * t).unwrap();
        let down = f.to_px(10.0 * t, 10.0 - 10.0 * t).unwrap();
        assert!(img.has_near(up, PALETTE[0], 1), "series 0 at t={t} {up:?}");
        assert!(
            img.has_near(down, PALETTE[1], 1),
            "series 1 at t={t} {down:?}"
        );
    }
    // Well away from both lines (and from the legend's corner): no series colour.
    for (x, y) in [(1.0, 5.0), (9.0, 5.0), (5.0, 1.0), (5.0, 8.5), (3.0, 4.5)] {
        let off = f.to_px(x, y).unwrap();
        assert!(
            !img.has_near(off, PALETTE[0], 3) && !img.has_near(off, PALETTE[1], 3),
            "({x}, {y}) -> {off:?}"
        );
    }
    // Lines are thin: each colour covers far less than 2% of the image.
    let total = (w * h) as usize;
    for col in &PALETTE[..2] {
        let n = img.count(*col);
        assert!(n > 300 && n < total / 50, "{n} pixels of {col:?}");
    }
}

#[test]
fn markers_on_short_series() {
    let pts = vec![(0.0, 1.0), (1.0, 2.0), (2.0, 1.5)];
    let chart = Chart::new("", "", "").with("short", pts.clone());
    let f = frame(&chart, 400, 300).unwrap();
    let img = decode(&render_png(&chart, 400, 300).unwrap());
    for (x, y) in pts {
        let (px, py) = f.to_px(x, y).unwrap();
        // A marker is a filled disc of radius ~2.6: the 3x3 block around the centre is solid.
        for (dx, dy) in [(-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0), (0.0, 0.0)] {
            let p = img
                .at((px + dx).floor() as i64, (py + dy).floor() as i64)
                .unwrap();
            assert!(
                close(p, PALETTE[0]),
                "marker at ({x},{y}) offset ({dx},{dy}): {p:?}"
            );
        }
    }
}

fn assert_nice(a: &Axis, lo: f64, hi: f64, max: usize) {
    assert!(
        a.lo <= lo && a.hi >= hi && a.lo < a.hi,
        "{a:?} must cover {lo}..{hi}"
    );
    assert!(a.ticks.len() >= 2 && a.ticks.len() <= max.max(3), "{a:?}");
    let step = a.ticks[1] - a.ticks[0];
    let mantissa = step / 10f64.powf(step.log10().floor());
    assert!(
        [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6),
        "step {step}"
    );
    for pair in a.ticks.windows(2) {
        assert!(
            ((pair[1] - pair[0]) - step).abs() < 1e-9 * step.max(1.0),
            "{a:?}"
        );
    }
    for t in &a.ticks {
        let k = t / step;
        assert!(
            (k - k.round()).abs() < 1e-6,
            "tick {t} is not a multiple of {step}"
        );
    }
    assert!((a.ticks[0] - a.lo).abs() < 1e-9 && (a.ticks.last().unwrap() - a.hi).abs() < 1e-9);
}

#[test]
fn nice_linear_ticks() {
    let a = Axis::linear(0.0, 1.0, 8);
    assert_nice(&a, 0.0, 1.0, 8);
    let labels: Vec<String> = a.ticks.iter().map(|&t| a.label(t)).collect();
    assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);

    let a = Axis::linear(0.0, 7.3, 8);
    assert_eq!(a.ticks, [0.0, 2.0, 4.0, 6.0, 8.0]);
    let a = Axis::linear(0.0, 7.3, 10);
    assert_eq!(a.ticks, (0..=8).map(f64::from).collect::<Vec<_>>());
    assert_eq!(a.label(3.0), "3");

    // Constant series: padded around the value, still nice.
    let a = Axis::linear(0.5, 0.5, 8);
    assert_nice(&a, 0.5, 0.5, 8);
    assert!(a.hi - a.lo < 0.5, "padding is relative to the value: {a:?}");
    let a = Axis::linear(0.0, 0.0, 8);
    assert_nice(&a, -0.5, 0.5, 8);
    let a = Axis::linear(1e6, 1e6, 6);
    assert_nice(&a, 1e6, 1e6, 6);

    for (lo, hi, max) in [
        (-3.2, -0.1, 7),
        (2.31, 4.5, 9),
        (0.0, 20000.0, 8),
        (-1e-4, 3e-4, 5),
        (1e6, 1e6 + 3.0, 6),
        (0.001, 1234.5, 3),
        (-7.0, 11.0, 2),
    ] {
        assert_nice(&Axis::linear(lo, hi, max), lo, hi, max);
    }
    let a = Axis::linear(0.0, 3e-4, 5);
    assert_eq!(a.label(a.ticks[1]), "1e-4");
    let a = Axis::linear(0.0, 1.2e6, 5);
    assert_eq!(a.label(a.ticks[1]), "5e5");
}

#[test]
fn nice_log_ticks() {
    let a = Axis::log10(1e-3, 1e2);
    assert!(a.log);
    assert_eq!(a.ticks.len(), 6);
    for (t, k) in a.ticks.iter().zip(-3..=2) {
        assert!((t / 10f64.powi(k) - 1.0).abs() < 1e-12, "{a:?}");
    }
    let labels: Vec<String> = a.ticks.iter().map(|&t| a.label(t)).collect();
    assert_eq!(labels, ["0.001", "0.01", "0.1", "1", "10", "100"]);

    // Within one decade: 1-2-5 ticks.
    let a = Axis::log10(2.0, 8.0);
    assert_eq!(a.ticks, [1.0, 2.0, 5.0, 10.0]);
    // A constant positive value: widened to whole decades around it.
    let a = Axis::log10(0.3, 0.3);
    assert!(a.lo < 0.3 && a.hi > 0.3 && a.ticks.len() >= 2, "{a:?}");
    // Many decades: at most 9 ticks.
    let a = Axis::log10(1e-12, 1e12);
    assert!(a.ticks.len() <= 9 && a.lo <= 1e-12 && a.hi >= 1e12, "{a:?}");
    assert_eq!(a.label(1e-9), "1e-9");
}

#[test]
fn non_finite_points_leave_a_gap() {
    let pts = vec![
        (0.0, 0.0),
        (1.0, 1.0),
        (2.0, f64::NAN),
        (3.0, 3.0),
        (4.0, 4.0),
        (f64::INFINITY, 5.0),
        (5.0, 5.0),
        (6.0, 6.0),
    ];
    let chart = Chart::new("gaps", "x", "y").with("s", pts);
    let f = frame(&chart, 640, 400).unwrap();
    assert!(
        f.x.lo <= 0.0 && f.x.hi >= 6.0 && f.x.hi < 100.0,
        "inf ignored: {:?}",
        f.x
    );
    let img = decode(&render_png(&chart, 640, 400).unwrap());
    let mid_gap = f.to_px(2.0, 2.0).unwrap();
    assert!(
        !img.has_near(mid_gap, PALETTE[0], 2),
        "no line through the NaN"
    );
    assert!(img.has_near(f.to_px(3.5, 3.5).unwrap(), PALETTE[0], 1));
    assert!(img.has_near(f.to_px(0.5, 0.5).unwrap(), PALETTE[0], 1));
    assert!(img.has_near(f.to_px(5.5, 5.5).unwrap(), PALETTE[0], 1));

    // log_y skips non-positive values the same way.
    let mut chart = Chart::new("log", "step", "kl").with(
        "kl",
        vec![
            (0.0, 1e-3),
            (1.0, 0.0),
            (2.0, -1.0),
            (3.0, 1e-1),
            (4.0, 1.0),
        ],
    );
    chart.log_y = true;
    let f = frame(&chart, 640, 400).unwrap();
    assert!(f.y.log && f.y.lo <= 1e-3 && f.y.hi >= 1.0);
    assert_eq!(f.to_px(1.0, 0.0), None);
    let img = decode(&render_png(&chart, 640, 400).unwrap());
    assert!(img.has_near(f.to_px(3.5, 10f64.powf(-0.5)).unwrap(), PALETTE[0], 1));
}

#[test]
fn empty_chart_renders_no_data() {
    let nan = Chart::new("nothing yet", "step", "reward")
        .with("r", vec![(f64::NAN, 1.0), (1.0, f64::NAN)]);
    for chart in [Chart::default(), Chart::new("t", "x", "y"), nan] {
        assert!(frame(&chart, 400, 300).is_none());
        let img = decode(&render_png(&chart, 400, 300).unwrap());
        assert_eq!((img.w, img.h), (400, 300));
        // "no data" is drawn in grey around the middle of the image.
        let grey = [120, 120, 120];
        let centre: usize = (130..170)
            .flat_map(|y| (100..300).map(move |x| (x, y)))
            .filter(|&(x, y)| img.at(x, y).is_some_and(|p| close(p, grey)))
            .count();
        assert!(
            centre > 20,
            "no-data message missing ({centre} grey pixels)"
        );
    }
}

#[test]
fn write_png_is_atomic_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves/reward.png");
    let chart = sample_chart();
    write_png(&chart, &path).unwrap();
    write_png(&chart, &path).unwrap(); // overwrite in place
    let img = decode(&std::fs::read(&path).unwrap());
    assert_eq!((img.w, img.h), (720, 420));
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["reward.png"], "no temp file left behind");
    // For eyeballing: CHATFORGE_REPORT_SAMPLE=/tmp/report_sample.png cargo test ... --test report
    if let Some(p) = std::env::var_os("CHATFORGE_REPORT_SAMPLE") {
        write_png(&chart, std::path::Path::new(&p)).unwrap();
        let mut log = Chart::new(
            "PPO KL to the SFT policy (log scale)",
            "PPO step",
            "KL (nats/token)",
        )
        .with(
            "KL",
            (0..60)
                .map(|i| (i as f64, 1e-3 * 1.12f64.powi(i)))
                .collect(),
        )
        .with("target", vec![(0.0, 0.1), (59.0, 0.1)]);
        log.log_y = true;
        write_png(&log, &std::path::Path::new(&p).with_extension("log.png")).unwrap();
        let empty = Chart::new("win rate vs SFT", "PPO step", "win rate");
        write_png(
            &empty,
            &std::path::Path::new(&p).with_extension("empty.png"),
        )
        .unwrap();
    }
}

fn sample_chart() -> Chart {
    let noisy = |i: usize, a: f64| ((i as f64 * 12.9898).sin() * 43758.5453).fract() * a;
    let reward = (0..400).map(|i| {
        let s = i as f64 * 5.0;
        (s, 1.6 * (1.0 - (-s / 600.0).exp()) - 0.4 + noisy(i, 0.25))
    });
    let mut pts: Vec<(f64, f64)> = reward.collect();
    pts[150].1 = f64::NAN; // a gap
    Chart::new(
        "PPO: mean reward and β-scaled KL penalty",
        "PPO step",
        "reward (RM units)",
    )
    .with("reward (policy)", pts)
    .with(
        "KL penalty β·KL",
        (0..400)
            .map(|i| {
                (
                    i as f64 * 5.0,
                    0.02 * (i as f64).sqrt() + noisy(i + 7, 0.05),
                )
            })
            .collect(),
    )
    .with(
        "eval win rate vs SFT",
        (0..=10)
            .map(|k| (k as f64 * 200.0, 0.5 + 0.035 * k as f64))
            .collect(),
    )
}

#[test]
fn md_table_escapes_and_pads() {
    let t = md_table(
        &["model", "win rate"],
        &[
            vec!["sft|v2".into(), "0.5".into()],
            vec!["ppo\nfinal".into()],
            vec!["a".into(), "b".into(), "c".into()],
        ],
    );
    assert_eq!(
        t,
        concat!(
            "| model | win rate |  |\n",
            "|---|---|---|\n",
            "| sft\\|v2 | 0.5 |  |\n",
            "| ppo final |  |  |\n",
            "| a | b | c |\n",
        )
    );
    assert_eq!(md_table(&["x"], &[]), "| x |\n|---|\n");
}

#[test]
fn fmt_num_significant_digits() {
    let cases = [
        (f64::NAN, "–"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (0.0, "0"),
        (0.5, "0.5"),
        (0.8125, "0.8125"),
        (12.3456, "12.35"),
        (1234.56, "1235"),
        (-3.0, "-3"),
        (123456.0, "123456"),
        (2.5e6, "2.5e6"),
        (1.23456e-4, "1.235e-4"),
        (-0.0421, "-0.0421"),
        (9.99996, "10"),
    ];
    for (x, want) in cases {
        assert_eq!(fmt_num(x), want, "fmt_num({x})");
    }
}
