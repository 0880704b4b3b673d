//! `GET /dashboard`: the weekly usage dashboard for analysts, one self-contained HTML page (SVG
//! charts drawn on the server with plotters, inline styles, no scripts), so it works offline
//! and can be saved as it is.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{Duration, Utc};
use plotters::prelude::*;

use super::handlers::{draft, on_conn};
use super::reports::parse;
use super::ApiError;
use crate::domain::Caller;
use crate::fhir::resources::healthcare_service::SPECIALTY_SYSTEM;
use crate::service::reports::{self, Dashboard, Report};
use crate::startup::AppState;

/// Weeks shown when the request names no start.
const DEFAULT_WEEKS: i64 = 12;
/// Specialties drawn as their own line; the rest are summed as "other".
const TOP_SPECIALTIES: usize = 8;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn specialty_name(code: &str) -> String {
    if code.is_empty() {
        return "Not recorded".into();
    }
    crate::fhir::terminology::concept(SPECIALTY_SYSTEM, code)
        .and_then(|c| c.get("display"))
        .and_then(serde_json::Value::as_str)
        .map_or_else(|| code.to_owned(), str::to_owned)
}

/// A line chart of weekly series as SVG; `percent` scales a 0..1 series to 0..100 %.
fn line_chart(
    title: &str,
    weeks: &[String],
    series: &[(String, Vec<f64>)],
    y_label: &str,
) -> Result<String, ApiError> {
    let mut svg = String::new();
    let fail = |e: &dyn std::fmt::Display| ApiError::Internal(format!("chart '{title}': {e}"));
    {
        let root = SVGBackend::with_string(&mut svg, (900, 380)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let top = series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0_f64, f64::max)
            .max(1.0)
            * 1.1;
        let n = weeks.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0..(n - 1).max(1), 0.0..top)
            .map_err(|e| fail(&e))?;
        chart
            .configure_mesh()
            .x_labels(n.min(13))
            .x_label_formatter(&|i| weeks.get(*i).cloned().unwrap_or_default())
            .y_desc(y_label)
            .draw()
            .map_err(|e| fail(&e))?;
        for (idx, (name, values)) in series.iter().enumerate() {
            let colour = Palette99::pick(idx).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    values.iter().enumerate().map(|(i, v)| (i, *v)),
                    colour.stroke_width(2),
                ))
                .map_err(|e| fail(&e))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

/// A table of the numbers a chart draws (for screen readers, and to copy from).
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = String::from("<table><thead><tr>");
    for h in head {
        t.push_str(&format!("<th scope=\"col\">{}</th>", escape(h)));
    }
    t.push_str("</tr></thead><tbody>");
    for r in rows {
        t.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            if i == 0 {
                t.push_str(&format!("<th scope=\"row\">{}</th>", escape(c)));
            } else {
                t.push_str(&format!("<td>{}</td>", escape(c)));
            }
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

/// The page for the dashboard's figures.
pub fn render(d: &Dashboard, filters: &str) -> Result<String, ApiError> {
    let mut weeks: Vec<String> = d.usage.keys().map(|(w, _)| w.clone()).collect();
    weeks.extend(d.slots.keys().cloned());
    weeks.sort();
    weeks.dedup();
    let at = |w: &str| weeks.iter().position(|x| x == w).unwrap_or(0);

    // Initial referrals per week by specialty: the largest specialties, the rest as "other".
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for ((_, s), u) in &d.usage {
        *totals.entry(s.clone()).or_default() += u.initial_referrals;
    }
    let mut ranked: Vec<(String, i64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<String> = ranked
        .iter()
        .take(TOP_SPECIALTIES)
        .map(|(s, _)| s.clone())
        .collect();
    let mut by_specialty: Vec<(String, Vec<f64>)> = top
        .iter()
        .map(|s| (specialty_name(s), vec![0.0; weeks.len()]))
        .collect();
    let mut other = vec![0.0; weeks.len()];
    let mut sums = vec![[0i64; 4]; weeks.len()];
    for ((w, s), u) in &d.usage {
        let i = at(w);
        match top.iter().position(|t| t == s) {
            Some(k) => by_specialty[k].1[i] += u.initial_referrals as f64,
            None => other[i] += u.initial_referrals as f64,
        }
        sums[i][0] += u.initial_referrals;
        sums[i][1] += u.bookings;
        sums[i][2] += u.advice_requests;
        sums[i][3] += u.conversions;
    }
    if other.iter().any(|v| *v > 0.0) {
        by_specialty.push(("Other specialties".into(), other));
    }
    let specialty_chart = line_chart(
        "Initial referrals per ISO week, by specialty",
        &weeks,
        &by_specialty,
        "referrals",
    )?;
    let measure = |k: usize| sums.iter().map(|s| s[k] as f64).collect::<Vec<_>>();
    let usage_chart = line_chart(
        "Activity per ISO week",
        &weeks,
        &[
            ("Initial referrals".into(), measure(0)),
            ("Bookings".into(), measure(1)),
            ("A&G requests".into(), measure(2)),
            ("A&G conversions".into(), measure(3)),
        ],
        "count",
    )?;
    let utilisation: Vec<f64> = weeks
        .iter()
        .map(|w| {
            d.slots
                .get(w)
                .and_then(|s| s.utilisation())
                .map_or(0.0, |u| u * 100.0)
        })
        .collect();
    let slot_chart = line_chart(
        "Slot utilisation per ISO week (booked / (booked + free))",
        &weeks,
        &[("Utilisation %".into(), utilisation)],
        "%",
    )?;
    let usage_rows: Vec<Vec<String>> = weeks
        .iter()
        .zip(&sums)
        .map(|(w, s)| {
            let mut r = vec![w.clone()];
            r.extend(s.iter().map(i64::to_string));
            r
        })
        .collect();
    let slot_rows: Vec<Vec<String>> = d
        .slots
        .iter()
        .map(|(w, s)| {
            vec![
                w.clone(),
                s.published.to_string(),
                s.booked.to_string(),
                s.free.to_string(),
                s.cancelled.to_string(),
                s.utilisation()
                    .map_or_else(|| "-".into(), |u| format!("{:.1} %", u * 100.0)),
            ]
        })
        .collect();
    let specialty_rows: Vec<Vec<String>> = ranked
        .iter()
        .map(|(s, n)| vec![specialty_name(s), n.to_string()])
        .collect();
    Ok(format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>e-RS usage dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: Arial, sans-serif; margin: 1.5rem; color: #212b32; max-width: 960px; }}
h1 {{ font-size: 1.6rem; }} h2 {{ font-size: 1.2rem; margin-top: 2rem; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
th, td {{ border: 1px solid #d8dde0; padding: .25rem .6rem; text-align: right; }}
th[scope=row], thead th {{ text-align: left; background: #f0f4f5; }}
.note {{ color: #4c6272; }} svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>e-Referral usage dashboard</h1>
<p class="note">Filters: {filters}. Generated {generated} from the reporting tables; the same
figures are in <code>/reports/usage</code> and <code>/reports/appointment-slots</code>
(CSV or JSON).</p>
<h2>Initial referrals by specialty</h2>
{specialty_chart}
{specialty_table}
<h2>Activity</h2>
{usage_chart}
{usage_table}
<h2>Appointment slots</h2>
{slot_chart}
{slot_table}
</body></html>
"#,
        filters = escape(filters),
        generated = Utc::now().format("%Y-%m-%d %H:%M UTC"),
        specialty_table = table(&["Specialty", "Initial referrals"], &specialty_rows),
        usage_table = table(
            &[
                "ISO week",
                "Initial referrals",
                "Bookings",
                "A&G requests",
                "A&G conversions"
            ],
            &usage_rows
        ),
        slot_table = table(
            &[
                "ISO week",
                "Published",
                "Booked",
                "Free",
                "Cancelled",
                "Utilisation"
            ],
            &slot_rows
        ),
    ))
}

/// `GET /dashboard?…` (the usage report's filters; the last 12 weeks unless `from` says).
pub async fn show(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    reports::authorise(Report::Usage, &caller)?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("the query string cannot be decoded: {e}")))?;
    if let Some((k, _)) = params.iter().find(|(k, _)| k == "group" || k == "_format") {
        return Err(ApiError::bad_param(
            k,
            "is not a parameter of the dashboard (it takes organization, from, to, specialty, service, priority)",
        ));
    }
    let (mut request, _) = parse(Report::Usage, &params)?;
    if request.filter.from.is_none() {
        request.filter.from = Some(Utc::now().naive_utc() - Duration::weeks(DEFAULT_WEEKS));
    }
    let filters = if params.is_empty() {
        format!("the last {DEFAULT_WEEKS} weeks, all organisations")
    } else {
        params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let d = draft(&req, Some(&caller));
    let figures = on_conn(&state, move |c| -> Result<_, ApiError> {
        Ok(reports::dashboard(c, &request.filter, &caller, &d)?)
    })
    .await?;
    let page = render(&figures, &filters)?;
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(page))
}
