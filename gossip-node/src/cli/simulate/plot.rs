//! The SVG of `gossip-node simulate --plot`: the share of the members that
//! have a write, over time since it was made, beside the push-pull bound.
//!
//! Written by hand with string formatting (no plotting library): axes with
//! ticks and labels, a legend, and two polylines:
//!
//! - **measured**: the write's `series` from the simulator (share of the
//!   members that have it, against virtual time since the write);
//! - **push-pull model**: the mean-field curve of the one-call push-pull
//!   protocol that the bound of Karp, Schindelhauer, Shenker and Vöcking
//!   (2000) is about. With a share `i` informed and `u = 1 - i` not, an
//!   uninformed member stays so through a round if the partner it calls is
//!   uninformed (probability `u`) and no informed member calls it
//!   (probability about `e^-i`): `u' = u * (1 - i) * e^-i`, from `i = 1/N`,
//!   one round per gossip interval. It grows about threefold per round at
//!   first (the `log3 N` term) and squares the uninformed share at the end
//!   (the `ln ln N` term).
//!
//! A dashed vertical line marks the bound itself,
//! `(log3 N + ln ln N) x gossip interval`.

use std::fmt::Write as _;

use gossip_sim::Report;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;

/// The points `(t_ms, share)` of the push-pull model for `n` members with
/// one round every `round_ms`, until every member is informed (the share
/// passes `1 - 1/(2n)`) or 200 rounds.
pub fn push_pull_model(n: usize, round_ms: f64) -> Vec<(f64, f64)> {
    let n = n.max(1) as f64;
    let mut i = 1.0 / n;
    let mut points = vec![(0.0, i)];
    for round in 1..=200 {
        let u = 1.0 - i;
        let u_next = u * (1.0 - i) * (-i).exp();
        i = 1.0 - u_next;
        if u_next < 0.5 / n {
            points.push((f64::from(round) * round_ms, 1.0));
            break;
        }
        points.push((f64::from(round) * round_ms, i));
    }
    points
}

/// A step of 1, 2 or 5 times a power of ten giving about five ticks up to
/// `max`.
fn tick_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|k| k * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// The SVG document for `report`: its first write's spread (if it has one)
/// and the model of the bound.
pub fn svg(report: &Report) -> String {
    let round_ms = report.gossip_interval_ms;
    let model = push_pull_model(report.nodes, round_ms);
    let bound_ms = report.karp_bound_rounds * round_ms;
    let measured: Vec<(f64, f64)> = report
        .updates
        .first()
        .map(|u| u.series.iter().map(|p| (p.t_ms, p.fraction)).collect())
        .unwrap_or_default();
    let last = |pts: &[(f64, f64)]| pts.last().map_or(0.0, |p| p.0);
    let x_max_data = last(&measured).max(last(&model)).max(bound_ms).max(1.0);
    let step = tick_step(x_max_data * 1.05);
    let x_max = (x_max_data * 1.05 / step).ceil() * step;

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + (t / x_max).clamp(0.0, 1.0) * plot_w;
    let y = |f: f64| TOP + (1.0 - f.clamp(0.0, 1.0)) * plot_h;
    let polyline = |pts: &[(f64, f64)]| {
        pts.iter()
            .map(|&(t, f)| format!("{:.1},{:.1}", x(t), y(f)))
            .collect::<Vec<_>>()
            .join(" ")
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "Spread of a write: {} members, fanout {}, loss {}, eager push {}",
        report.nodes,
        report.fanout,
        report.loss,
        if report.eager_push { "on" } else { "off" }
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{title}</text>"#,
        WIDTH / 2.0
    );
    // Grid, ticks and labels.
    let mut t = 0.0;
    while t <= x_max + step / 2.0 {
        let px = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{t}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
        t += step;
    }
    for k in 0..=4 {
        let f = f64::from(k) / 4.0;
        let py = y(f);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}%</text>"##,
            LEFT + plot_w,
            LEFT - 8.0,
            py + 4.0,
            k * 25
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b:.1}" stroke="black"/><line x1="{LEFT}" y1="{b:.1}" x2="{r:.1}" y2="{b:.1}" stroke="black"/>"#,
        b = TOP + plot_h,
        r = LEFT + plot_w
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">virtual time since the write (ms)</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">members that have the write</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // The bound, the model and the measurement.
    let bx = x(bound_ms);
    let _ = writeln!(
        s,
        r##"<line x1="{bx:.1}" y1="{TOP}" x2="{bx:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="2,3"/>"##,
        TOP + plot_h
    );
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#d62728" stroke-width="1.5" stroke-dasharray="6,4" points="{}"/>"##,
        polyline(&model)
    );
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
        polyline(&measured)
    );
    // Legend.
    let (lx, ly) = (LEFT + plot_w - 330.0, TOP + plot_h - 62.0);
    let _ = writeln!(
        s,
        r##"<rect x="{lx:.1}" y="{ly:.1}" width="320" height="54" fill="white" stroke="#999"/>"##
    );
    let entries = [
        ("#1f77b4", "", "measured (simulator)".to_owned()),
        (
            "#d62728",
            "6,4",
            "push-pull model, one call per round".to_owned(),
        ),
        (
            "#d62728",
            "2,3",
            format!(
                "bound log3 N + ln ln N = {:.2} rounds",
                report.karp_bound_rounds
            ),
        ),
    ];
    for (k, (color, dash, label)) in entries.iter().enumerate() {
        let ey = ly + 14.0 + 15.0 * k as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ey:.1}" x2="{:.1}" y2="{ey:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            lx + 8.0,
            lx + 38.0,
            lx + 46.0,
            ey + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn model_reaches_everyone_near_the_bound() {
        for n in [10, 100, 1000, 10_000] {
            let model = push_pull_model(n, 1.0);
            let rounds = model.last().unwrap().0;
            assert_eq!(model.last().unwrap().1, 1.0);
            let bound = gossip_sim::karp_bound_rounds(n);
            assert!(
                (rounds - bound).abs() <= 2.5,
                "n {n}: model {rounds} rounds, bound {bound}"
            );
            assert!(model.windows(2).all(|w| w[0].1 <= w[1].1), "{model:?}");
        }
    }

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(1000.0), 200.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(2600.0), 1000.0);
    }

    /// The numbers of a `points="x,y x,y"` attribute.
    fn points(poly: &str) -> Vec<(f64, f64)> {
        let attr = poly.split("points=\"").nth(1).unwrap();
        let attr = &attr[..attr.find('"').unwrap()];
        attr.split_whitespace()
            .map(|p| {
                let (a, b) = p.split_once(',').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn svg_has_axes_legend_and_two_curves_in_range() {
        let mut cfg = gossip_sim::SimConfig::new(20, 5);
        cfg.duration = Duration::from_secs(3);
        cfg.scenario = gossip_sim::Scenario::Update {
            at: Duration::from_secs(1),
        };
        let report = gossip_sim::run_scenario(&cfg, &mut |_| {}).unwrap();
        let svg = svg(&report);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        assert!(svg.contains("measured (simulator)"));
        assert!(svg.contains("log3 N + ln ln N"));
        let polys: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
        assert_eq!(polys.len(), 2, "{svg}");
        let measured = points(polys[1]);
        assert_eq!(measured.len(), report.updates[0].series.len());
        for (px, py) in polys.iter().flat_map(|p| points(p)) {
            assert!((LEFT..=WIDTH - RIGHT).contains(&px), "x {px}");
            assert!((TOP..=HEIGHT - BOTTOM).contains(&py), "y {py}");
        }
        // The measured curve ends at 100 %, at the top of the plot.
        assert_eq!(measured.last().unwrap().1, TOP);
    }
}
