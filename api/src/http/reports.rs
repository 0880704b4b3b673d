//! Reports and extracts over HTTP: `GET /reports` (what there is), `GET /reports/{name}` as
//! CSV (RFC 4180, header row) or JSON, streamed as the rows come from the database.

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use ers_schema::reports::{ReportFilter, UsageKey};
use serde_json::{json, Value};

use super::handlers::draft;
use super::ApiError;
use crate::domain::{Caller, OdsCode};
use crate::fhir::datetime;
use crate::fhir::resources::healthcare_service::SPECIALTY_SYSTEM;
use crate::service::reports::{self, Cell, Report, Request};
use crate::startup::AppState;

/// How a report is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Json => "application/json",
        }
    }
    fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

/// `_format` (csv | json) first, then `Accept`; CSV when neither says.
fn format(req: &HttpRequest, given: Option<&str>) -> Result<Format, ApiError> {
    match given {
        Some("csv" | "text/csv") => return Ok(Format::Csv),
        Some("json" | "application/json") => return Ok(Format::Json),
        Some(other) => {
            return Err(ApiError::bad_param(
                "_format",
                format!("'{other}' is not a report format: csv or json"),
            ))
        }
        None => {}
    }
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Ok(
        if accept.contains("application/json") && !accept.contains("text/csv") {
            Format::Json
        } else {
            Format::Csv
        },
    )
}

/// The report's filters from the query string: each known, each valid, each one the report
/// takes.
pub fn parse(
    report: Report,
    params: &[(String, String)],
) -> Result<(Request, Option<String>), ApiError> {
    let mut filter = ReportFilter::default();
    let mut group = UsageKey::Specialty;
    let mut fmt = None;
    for (k, v) in params {
        let takes = report.filters().contains(&k.as_str());
        if reports::FILTERS.contains(&k.as_str()) && !takes {
            return Err(ApiError::bad_param(
                k,
                format!(
                    "is not a filter of the {} report (it takes {})",
                    report.code(),
                    report.filters().join(", ")
                ),
            ));
        }
        match k.as_str() {
            "organization" => {
                filter.org = Some(
                    OdsCode::parse(v)
                        .map_err(|e| ApiError::bad_param(k, e.0))?
                        .as_str()
                        .to_owned(),
                )
            }
            "from" | "to" => {
                let (low, high) = datetime::range(v).ok_or_else(|| {
                    ApiError::bad_param(
                        k,
                        format!(
                            "'{v}' is not a date or date-time (2026-11-01, 2026-11-23T10:00:00Z)"
                        ),
                    )
                })?;
                if k == "from" {
                    filter.from = Some(low);
                } else {
                    filter.to = Some(high);
                }
            }
            "specialty" => {
                let known = crate::fhir::terminology::codes(SPECIALTY_SYSTEM);
                if !known.contains(&v.as_str()) {
                    return Err(ApiError::bad_param(
                        k,
                        format!("'{v}' is not an e-RS specialty code ({SPECIALTY_SYSTEM})"),
                    ));
                }
                filter.specialty = Some(v.clone());
            }
            "service" => {
                let id = v.strip_prefix("HealthcareService/").unwrap_or(v);
                if id.is_empty() {
                    return Err(ApiError::bad_param(k, "needs a HealthcareService id"));
                }
                filter.service = Some(id.to_owned());
            }
            "priority" => {
                if !["ROUTINE", "URGENT", "TWO_WEEK_WAIT"].contains(&v.as_str()) {
                    return Err(ApiError::bad_param(
                        k,
                        format!("'{v}' is not an e-RS priority: ROUTINE, URGENT or TWO_WEEK_WAIT"),
                    ));
                }
                filter.priority = Some(v.clone());
            }
            "group" if report == Report::Usage => {
                group = match v.as_str() {
                    "specialty" => UsageKey::Specialty,
                    "organisation" | "organization" => UsageKey::Organisation,
                    _ => {
                        return Err(ApiError::bad_param(
                            k,
                            format!("'{v}' is not a grouping: specialty or organisation"),
                        ))
                    }
                }
            }
            "_format" => fmt = Some(v.clone()),
            other => {
                return Err(ApiError::bad_param(
                    other,
                    format!(
                        "is not a parameter of the {} report (it takes {}{}, _format)",
                        report.code(),
                        report.filters().join(", "),
                        if report == Report::Usage {
                            ", group"
                        } else {
                            ""
                        }
                    ),
                ))
            }
        }
    }
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if from > to {
            return Err(ApiError::bad_param("from", "is after 'to'"));
        }
    }
    Ok((
        Request {
            report,
            filter,
            group,
        },
        fmt,
    ))
}

fn json_cell(c: &Cell) -> Value {
    match c {
        Cell::Text(s) => json!(s),
        Cell::Int(i) => json!(i),
        Cell::Ratio(r) => json!((r * 1000.0).round() / 1000.0),
        Cell::Empty => Value::Null,
    }
}

fn csv_cell(c: &Cell) -> String {
    match c {
        Cell::Text(s) => s.clone(),
        Cell::Int(i) => i.to_string(),
        Cell::Ratio(r) => format!("{r:.3}"),
        Cell::Empty => String::new(),
    }
}

/// Encodes rows and hands the bytes on in chunks of about 64 KiB.
struct Encoder {
    format: Format,
    columns: &'static [&'static str],
    csv: csv::Writer<Vec<u8>>,
    buf: Vec<u8>,
    rows: u64,
    csv_rows: u64,
}

/// RFC 4180: CRLF line ends, fields quoted when they need it.
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

const CHUNK: usize = 64 * 1024;

impl Encoder {
    fn new(format: Format, columns: &'static [&'static str], head: Value) -> Encoder {
        let mut e = Encoder {
            format,
            columns,
            csv: csv_writer(),
            buf: Vec::new(),
            rows: 0,
            csv_rows: 0,
        };
        match format {
            Format::Csv => {
                // A header row always, even for an empty report.
                let _ = e.csv.write_record(columns);
            }
            Format::Json => {
                let mut h = head.to_string();
                h.pop(); // the closing brace: rows follow
                e.buf.extend_from_slice(h.as_bytes());
                e.buf.extend_from_slice(b",\"rows\":[");
            }
        }
        e
    }

    fn row(&mut self, cells: &[Cell]) {
        match self.format {
            Format::Csv => {
                let _ = self.csv.write_record(cells.iter().map(csv_cell));
            }
            Format::Json => {
                if self.rows > 0 {
                    self.buf.push(b',');
                }
                let o: serde_json::Map<String, Value> = self
                    .columns
                    .iter()
                    .zip(cells)
                    .map(|(k, c)| ((*k).to_owned(), json_cell(c)))
                    .collect();
                self.buf
                    .extend_from_slice(Value::Object(o).to_string().as_bytes());
            }
        }
        self.rows += 1;
    }

    /// Bytes ready to send (all of them when `all`).
    fn take(&mut self, all: bool) -> Option<Bytes> {
        if self.format == Format::Csv {
            self.csv_rows += 1;
            // The writer buffers; its bytes are taken every few hundred rows.
            if !all && !self.csv_rows.is_multiple_of(256) {
                return None;
            }
            let _ = self.csv.flush();
            let done = std::mem::replace(&mut self.csv, csv_writer());
            let bytes = done.into_inner().unwrap_or_default();
            self.buf.extend_from_slice(&bytes);
        }
        if self.buf.len() >= CHUNK || (all && !self.buf.is_empty()) {
            return Some(Bytes::from(std::mem::take(&mut self.buf)));
        }
        None
    }

    fn finish(&mut self) -> Option<Bytes> {
        if self.format == Format::Json {
            self.buf
                .extend_from_slice(format!("],\"count\":{}}}", self.rows).as_bytes());
        }
        self.take(true)
    }
}

/// `GET /reports`: the reports, their columns and filters.
pub async fn list(caller: Caller) -> Result<HttpResponse, ApiError> {
    let reports: Vec<Value> = Report::ALL
        .iter()
        .filter(|r| reports::authorise(**r, &caller).is_ok())
        .map(|r| {
            json!({
                "name": r.code(),
                "title": r.title(),
                "url": format!("/reports/{}", r.code()),
                "formats": ["csv", "json"],
                "filters": r.filters(),
                "columns": r.columns(UsageKey::Specialty),
            })
        })
        .collect();
    if reports.is_empty() {
        reports::authorise(Report::Usage, &caller)?;
    }
    Ok(HttpResponse::Ok().json(json!({ "reports": reports })))
}

/// `GET /reports/{name}?…`: the report, streamed.
pub async fn run(
    req: HttpRequest,
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    let report = Report::parse(&name).ok_or_else(|| {
        ApiError::NotFound(format!(
            "There is no report '{name}': the reports are {}",
            Report::ALL
                .iter()
                .map(|r| r.code())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    reports::authorise(report, &caller)?;
    let params: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("the query string cannot be decoded: {e}")))?;
    let (request, fmt) = parse(report, &params)?;
    let format = format(&req, fmt.as_deref())?;
    let d = draft(&req, Some(&caller));
    // The run is recorded, and the connection taken, before the answer starts: a database
    // that is down is a 503, not a truncated 200.
    // The stream keeps its turn at the pool as long as its connection.
    let turn = state.gate.turn().await?;
    let pool = state.pool.clone();
    let (r2, c2) = (request.clone(), caller.clone());
    let conn = web::block(move || -> Result<_, ApiError> {
        let mut c = pool.get()?;
        reports::start(&mut c, &r2, &c2, &d)?;
        Ok(c)
    })
    .await??;
    let generated = Utc::now().naive_utc();
    let head = json!({
        "report": report.code(),
        "title": report.title(),
        "generated": datetime::instant(generated),
        "parameters": params.iter().filter(|(k, _)| k != "_format").map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "columns": report.columns(request.group),
    });
    let columns = report.columns(request.group);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    actix_web::rt::task::spawn_blocking(move || {
        let mut conn = conn;
        let _turn = turn;
        let mut enc = Encoder::new(format, columns, head);
        let mut sink = |row: Vec<Cell>| -> bool {
            enc.row(&row);
            match enc.take(false) {
                Some(bytes) => tx.blocking_send(Ok(bytes)).is_ok(),
                None => true,
            }
        };
        let result = reports::rows(&mut conn, &request, &caller, &mut sink);
        match result {
            Ok(_) => {
                if let Some(bytes) = enc.finish() {
                    let _ = tx.blocking_send(Ok(bytes));
                }
            }
            Err(e) => {
                // The status has gone: all that can be done is to cut the body short, so the
                // client sees an incomplete transfer rather than a plausible short report.
                log::error!(
                    "report {} failed while streaming: {e}",
                    request.report.code()
                );
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((
            "Content-Disposition",
            format!(
                "attachment; filename=\"{}-{}.{}\"",
                report.code(),
                generated.format("%Y%m%dT%H%M%S"),
                format.extension()
            ),
        ))
        .insert_header(("Cache-Control", "no-store"))
        .streaming(body))
}
