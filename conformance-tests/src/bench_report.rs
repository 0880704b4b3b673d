//! `ers-bench-report [--dir docs/benchmarks] [--doc docs/BENCHMARKS.md]`
//!
//! Regenerates the summary of docs/BENCHMARKS.md from the benchmark scripts' results (one JSON
//! line per run in `docs/benchmarks/*.jsonl`): the latest run of each scenario on each database,
//! set against its target, the raw floor (`floor.jsonl`) and the peer server (`peer.jsonl`).
//! Writes the table between the `<!-- summary:begin -->` and `<!-- summary:end -->` markers of
//! the document, and the chart `summary.svg` (each target's result as a share of the target)
//! beside the results.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use plotters::prelude::*;
use serde_json::Value;

const BEGIN: &str = "<!-- summary:begin -->";
const END: &str = "<!-- summary:end -->";

/// Every result line of every file, by file stem (`booking`, `referrals`…).
struct Results(BTreeMap<String, Vec<Value>>);

impl Results {
    fn load(dir: &Path) -> Result<Results, String> {
        let mut all = BTreeMap::new();
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|x| x.to_str()) != Some("jsonl") {
                continue;
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let lines = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .enumerate()
                .map(|(i, l)| {
                    serde_json::from_str(l)
                        .map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
                })
                .collect::<Result<Vec<Value>, String>>()?;
            all.insert(stem, lines);
        }
        Ok(Results(all))
    }

    /// The last line of `file` on `backend` for which `pick` holds, of a run with the server's
    /// default settings (a label naming another pool, `pool=N`, is an experiment).
    fn latest(&self, file: &str, backend: &str, pick: &dyn Fn(&Value) -> bool) -> Option<&Value> {
        self.0.get(file)?.iter().rev().find(|v| {
            v["label"]
                .as_str()
                .is_some_and(|l| l.starts_with(backend) && !l.contains(" pool="))
                && pick(v)
        })
    }

    /// The most recent (by the time in its label) of each file's latest.
    fn latest_of(
        &self,
        files: &[&str],
        backend: &str,
        pick: &dyn Fn(&Value) -> bool,
    ) -> Option<&Value> {
        files
            .iter()
            .filter_map(|f| self.latest(f, backend, pick))
            .max_by_key(|v| when(v))
    }
}

/// One target of the issues, and where its result is found.
struct Target {
    what: &'static str,
    /// Where its results are (the latest run of all of them counts).
    files: &'static [&'static str],
    pick: fn(&Value) -> bool,
    field: &'static str,
    unit: &'static str,
    goal: Goal,
}

#[derive(Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
    /// At least this many times the peer's result of the same scenario and field.
    PeerTimes(f64),
}

fn scenario(v: &Value, name: &str, clients: u64) -> bool {
    v["scenario"] == name && v["clients"].as_u64() == Some(clients)
}

fn ours(v: &Value) -> bool {
    v["label"]
        .as_str()
        .is_some_and(|l| !l.contains("server=helios-hfs"))
}

fn unsubscribed(v: &Value) -> bool {
    v["subscriptions"].as_u64().unwrap_or(0) == 0
}

const TARGETS: &[Target] = &[
    Target {
        what: "read by id, 32 clients",
        files: &["floor", "peer"],
        pick: |v| ours(v) && scenario(v, "read", 32),
        field: "throughput_per_s",
        unit: "/s",
        goal: Goal::PeerTimes(2.0),
    },
    Target {
        what: "read by id, 32 clients: p99",
        files: &["floor", "peer"],
        pick: |v| ours(v) && scenario(v, "read", 32),
        field: "p99_ms",
        unit: " ms",
        goal: Goal::AtMost(10.0),
    },
    Target {
        what: "create referral, 32 clients",
        files: &["referrals", "floor"],
        pick: |v| scenario(v, "create-referral", 32),
        field: "throughput_per_s",
        unit: "/s",
        goal: Goal::AtLeast(1000.0),
    },
    Target {
        what: "create referral, 32 clients: p99",
        files: &["referrals", "floor"],
        pick: |v| scenario(v, "create-referral", 32),
        field: "p99_ms",
        unit: " ms",
        goal: Goal::AtMost(50.0),
    },
    Target {
        what: "book, 32 clients",
        files: &["booking"],
        pick: |v| scenario(v, "book", 32) && unsubscribed(v),
        field: "throughput_per_s",
        unit: "/s",
        goal: Goal::AtLeast(800.0),
    },
    Target {
        what: "book, 32 clients: p99",
        files: &["booking"],
        pick: |v| scenario(v, "book", 32) && unsubscribed(v),
        field: "p99_ms",
        unit: " ms",
        goal: Goal::AtMost(50.0),
    },
    Target {
        what: "book with 100 subscriptions: delivery lag p95",
        files: &["booking"],
        pick: |v| scenario(v, "book", 32) && !unsubscribed(v),
        field: "delivery.lag_p95_ms",
        unit: " ms",
        goal: Goal::AtMost(1000.0),
    },
    Target {
        what: "contended booking: double bookings",
        files: &["booking"],
        pick: |v| v["scenario"] == "book-contended",
        field: "double_bookings",
        unit: "",
        goal: Goal::AtMost(0.0),
    },
    Target {
        what: "worklist over 1M referrals, 8 clients: p95",
        files: &["referrals"],
        pick: |v| {
            scenario(v, "worklist", 8)
                && v["label"]
                    .as_str()
                    .is_some_and(|l| l.contains("referrals=1000000"))
        },
        field: "p95_ms",
        unit: " ms",
        goal: Goal::AtMost(50.0),
    },
    Target {
        what: "DoS search by distance, 8 clients: p95",
        files: &["dos"],
        pick: |v| scenario(v, "dos-patient-search", 8),
        field: "p95_ms",
        unit: " ms",
        goal: Goal::AtMost(50.0),
    },
    Target {
        what: "active-referrals CSV of 1M",
        files: &["reports"],
        pick: |_| true,
        field: "csv_secs",
        unit: " s",
        goal: Goal::AtMost(20.0),
    },
    Target {
        what: "$export of 1M ServiceRequests",
        files: &["reports"],
        pick: |_| true,
        field: "export_per_sec",
        unit: "/s",
        goal: Goal::AtLeast(50_000.0),
    },
    Target {
        what: "server RSS during export",
        files: &["reports"],
        pick: |_| true,
        field: "export_max_rss_mb",
        unit: " MB",
        goal: Goal::AtMost(200.0),
    },
    Target {
        what: "national day (full scale)",
        files: &["national"],
        pick: |v| v["scale"].as_f64() == Some(1.0),
        field: "elapsed_s",
        unit: " s",
        goal: Goal::AtMost(60.0),
    },
    Target {
        what: "national day, the largest run scaled to a whole day",
        files: &["national"],
        pick: |_| true,
        field: "elapsed_s/scale",
        unit: " s",
        goal: Goal::AtMost(60.0),
    },
    Target {
        what: "national day: errors and double bookings",
        files: &["national"],
        pick: |_| true,
        field: "errors+double_bookings",
        unit: "",
        goal: Goal::AtMost(0.0),
    },
];

/// A field (`a.b` for nested, `a+b` for a sum, `a/b` for a ratio) of a result.
fn field(v: &Value, name: &str) -> Option<f64> {
    if let Some((a, b)) = name.split_once('+') {
        return Some(field(v, a)? + field(v, b)?);
    }
    if let Some((a, b)) = name.split_once('/') {
        let d = field(v, b)?;
        return (d > 0.0).then(|| field(v, a).map(|x| x / d))?;
    }
    name.split('.')
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_f64)
}

/// When a result was measured: the ISO date-time in its label (empty when none).
fn when(v: &Value) -> String {
    v["label"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .find(|w| w.len() >= 10 && w.as_bytes()[4] == b'-' && w.as_bytes()[7] == b'-')
        .unwrap_or_default()
        .to_owned()
}

/// The commit and date of a result, from its label.
fn source(v: &Value) -> String {
    let label = v["label"].as_str().unwrap_or_default();
    let commit = label
        .split_whitespace()
        .find_map(|w| w.strip_prefix("commit="))
        .unwrap_or("?");
    let date = label
        .split_whitespace()
        .find(|w| w.len() >= 10 && w.as_bytes()[4] == b'-' && w.as_bytes()[7] == b'-')
        .map_or("?", |w| &w[..10]);
    format!("{commit}, {date}")
}

fn number(x: f64) -> String {
    if x >= 100.0 || x == x.trunc() {
        let n = x.round() as i64;
        let s = n.abs().to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 {
            format!("-{out}")
        } else {
            out
        }
    } else {
        format!("{x:.1}")
    }
}

/// One row of the summary: the result on each database and how it stands to the goal.
struct Row {
    what: String,
    goal: String,
    pg: Option<(f64, String)>,
    sqlite: Option<(f64, String)>,
    /// Result over goal (1.0 = met exactly), PostgreSQL.
    score: Option<f64>,
    /// The results are ratios (shown as percentages).
    ratio: bool,
}

fn rows(r: &Results) -> Vec<Row> {
    let mut out = Vec::new();
    for t in TARGETS {
        let at = |backend: &str| {
            r.latest_of(t.files, backend, &|v| {
                (t.pick)(v) && field(v, t.field).is_some()
            })
            .map(|v| (field(v, t.field).unwrap_or_default(), source(v)))
        };
        let (pg, sqlite) = (at("postgres"), at("sqlite"));
        // The peer runs on SQLite (peer.sh).
        let peer = r
            .latest("peer", "sqlite", &|v| {
                !ours(v) && v["scenario"] == "read" && v["clients"].as_u64() == Some(32)
            })
            .and_then(|v| field(v, t.field));
        let (goal, limit, higher) = match t.goal {
            Goal::AtLeast(x) => (format!("≥ {}{}", number(x), t.unit), Some(x), true),
            Goal::AtMost(x) if x == 0.0 => ("none".to_owned(), Some(x), false),
            Goal::AtMost(x) => (format!("≤ {}{}", number(x), t.unit), Some(x), false),
            Goal::PeerTimes(k) => match peer {
                Some(p) => (
                    format!("≥ {k}× peer ({}{})", number(p), t.unit),
                    Some(k * p),
                    true,
                ),
                None => (format!("≥ {k}× peer (no peer result)"), None, true),
            },
        };
        let score = match (pg.as_ref(), limit) {
            (Some((x, _)), Some(l)) if higher => Some(x / l),
            // At most: the goal over the result (a zero goal is met or not).
            (Some((x, _)), Some(l)) => Some(match (l > 0.0, *x > 0.0) {
                (true, true) => l / x,
                (true, false) => 2.0,
                (false, false) => 1.0,
                (false, true) => 0.0,
            }),
            _ => None,
        };
        out.push(Row {
            what: t.what.to_owned(),
            goal,
            pg,
            sqlite,
            score,
            ratio: false,
        });
    }
    // Ratios to the raw floor (the same rows through diesel directly).
    // floor.sh measures the server and the floor one after the other on one database.
    // Only create referral (and booking, not measured yet) have a floor target.
    for (what, scenario_name, floor_name, goal) in [
        (
            "create referral / raw floor, 32 clients",
            "create-referral",
            "floor:create-referral",
            Some(0.5),
        ),
        (
            "read by id / raw floor, 32 clients",
            "read",
            "floor:read",
            None,
        ),
    ] {
        let at = |backend: &str| {
            let server = r.latest("floor", backend, &|v| scenario(v, scenario_name, 32))?;
            let floor = r.latest("floor", backend, &|v| scenario(v, floor_name, 32))?;
            let (s, f) = (
                field(server, "throughput_per_s")?,
                field(floor, "throughput_per_s")?,
            );
            (f > 0.0).then(|| {
                (
                    s / f,
                    format!("{}/s of {}/s; {}", number(s), number(f), source(floor)),
                )
            })
        };
        let (pg, sqlite) = (at("postgres"), at("sqlite"));
        out.push(Row {
            what: what.to_owned(),
            goal: goal.map_or_else(
                || "(no target)".to_owned(),
                |g: f64| format!("≥ {:.0} %", g * 100.0),
            ),
            score: goal.and_then(|g| pg.as_ref().map(|(x, _)| x / g)),
            pg,
            sqlite,
            ratio: true,
        });
    }
    out
}

fn table(rows: &[Row]) -> String {
    let cell = |x: &Option<(f64, String)>, ratio: bool| match x {
        Some((v, src)) if ratio => format!("{:.0} % <sub>({src})</sub>", v * 100.0),
        Some((v, src)) => format!("{} <sub>({src})</sub>", number(*v)),
        None => "not measured".to_owned(),
    };
    let mut t = String::from(
        "| Target | Goal | PostgreSQL | SQLite | Met (PostgreSQL) |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        let ratio = r.ratio;
        let met = match r.score {
            Some(s) if s >= 1.0 => "yes",
            Some(_) => "**no**",
            None => "—",
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {met} |\n",
            r.what,
            r.goal,
            cell(&r.pg, ratio),
            cell(&r.sqlite, ratio)
        ));
    }
    t
}

/// Each target's PostgreSQL result as a share of its goal (capped at 200 %), 100 % marked.
fn chart(rows: &[Row]) -> Result<String, String> {
    let scored: Vec<(&str, f64)> = rows
        .iter()
        .filter_map(|r| r.score.map(|s| (r.what.as_str(), (s * 100.0).min(200.0))))
        .collect();
    let n = scored.len().max(1);
    let height = 60 + 26 * n as u32;
    let mut svg = String::new();
    {
        let fail = |e: &dyn std::fmt::Display| format!("chart: {e}");
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut c = ChartBuilder::on(&root)
            .caption(
                "Benchmarks on PostgreSQL: result as a share of its target",
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(0)
            .build_cartesian_2d(0.0..200.0, 0.0..n as f64)
            .map_err(|e| fail(&e))?;
        c.configure_mesh()
            .disable_y_mesh()
            .disable_y_axis()
            .x_labels(9)
            .x_label_formatter(&|x| format!("{x:.0} %"))
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, (what, pct)) in scored.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            let colour = if *pct >= 100.0 {
                RGBColor(0, 112, 60)
            } else {
                RGBColor(212, 53, 28)
            };
            c.draw_series(std::iter::once(Rectangle::new(
                [(0.0, y + 0.15), (*pct, y + 0.85)],
                colour.mix(0.35).filled(),
            )))
            .map_err(|e| fail(&e))?;
            c.draw_series(std::iter::once(Text::new(
                format!("{what}: {pct:.0} %"),
                (2.0, y + 0.7),
                ("sans-serif", 12).into_font().color(&BLACK),
            )))
            .map_err(|e| fail(&e))?;
        }
        c.draw_series(LineSeries::new(
            [(100.0, 0.0), (100.0, n as f64)],
            BLACK.stroke_width(2),
        ))
        .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

fn run(dir: &Path, doc: &Path) -> Result<(), String> {
    let results = Results::load(dir)?;
    let rows = rows(&results);
    let svg = chart(&rows)?;
    let svg_path = dir.join("summary.svg");
    std::fs::write(&svg_path, svg).map_err(|e| format!("{}: {e}", svg_path.display()))?;
    let text = std::fs::read_to_string(doc).map_err(|e| format!("{}: {e}", doc.display()))?;
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        return Err(format!(
            "{} has no {BEGIN} … {END} section to fill",
            doc.display()
        ));
    };
    if e < b {
        return Err(format!("{}: {END} comes before {BEGIN}", doc.display()));
    }
    let rel = svg_path
        .strip_prefix(doc.parent().unwrap_or(Path::new(".")))
        .unwrap_or(&svg_path)
        .display()
        .to_string();
    let body = format!(
        "{BEGIN}\n<!-- generated by ers-bench-report from {}/*.jsonl: do not edit by hand -->\n\n{}\n![Each target's PostgreSQL result as a share of its target]({rel})\n",
        dir.display(),
        table(&rows)
    );
    let new = format!("{}{body}{}", &text[..b], &text[e..]);
    std::fs::write(doc, new).map_err(|e| format!("{}: {e}", doc.display()))?;
    println!(
        "{}: summary of {} targets; chart {}",
        doc.display(),
        rows.len(),
        svg_path.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let mut dir = PathBuf::from("docs/benchmarks");
    let mut doc = PathBuf::from("docs/BENCHMARKS.md");
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--dir", Some(v)) => dir = v.into(),
            ("--doc", Some(v)) => doc = v.into(),
            _ => {
                eprintln!(
                    "usage: ers-bench-report [--dir docs/benchmarks] [--doc docs/BENCHMARKS.md]"
                );
                return ExitCode::from(2);
            }
        }
    }
    match run(&dir, &doc) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ers-bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}
