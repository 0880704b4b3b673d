//! Check results and the three reports: a readable summary, JUnit XML and HTML.

use std::fmt::Write as _;

/// One HTTP exchange, as shown in the reports.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    pub request: String,
    pub status: u16,
    pub response: String,
}

/// The verdict of one check, with what was sent and received and what the validator said.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub group: &'static str,
    pub name: String,
    pub passed: bool,
    pub message: String,
    pub exchanges: Vec<Exchange>,
    pub validation: Vec<String>,
    pub millis: u128,
}

pub fn summary(results: &[CheckResult]) -> String {
    let mut out = String::new();
    for r in results {
        let _ = writeln!(
            out,
            "{} {} :: {}{}",
            if r.passed { "PASS" } else { "FAIL" },
            r.group,
            r.name,
            if r.passed {
                String::new()
            } else {
                format!(" — {}", r.message)
            }
        );
        for v in &r.validation {
            let _ = writeln!(out, "       validation: {v}");
        }
    }
    let passed = results.iter().filter(|r| r.passed).count();
    let _ = writeln!(
        out,
        "conformance: {} passed, {} failed",
        passed,
        results.len() - passed
    );
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn junit(results: &[CheckResult]) -> String {
    let failures = results.iter().filter(|r| !r.passed).count();
    let mut out = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"ers-conformance\" tests=\"{}\" failures=\"{failures}\">\n", results.len());
    for r in results {
        let _ = write!(
            out,
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            xml_escape(r.group),
            xml_escape(&r.name),
            r.millis as f64 / 1000.0
        );
        if !r.passed {
            let _ = write!(
                out,
                "<failure message=\"{}\">{}</failure>",
                xml_escape(&r.message),
                xml_escape(&r.validation.join("\n"))
            );
        }
        let log: String = r
            .exchanges
            .iter()
            .map(|e| format!("{}\n-> {}\n{}\n", e.request, e.status, e.response))
            .collect();
        let _ = writeln!(
            out,
            "<system-out>{}</system-out></testcase>",
            xml_escape(&log)
        );
    }
    out.push_str("</testsuite>\n");
    out
}

pub fn html(results: &[CheckResult], base_url: &str) -> String {
    let passed = results.iter().filter(|r| r.passed).count();
    let mut out = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ers-conformance</title><style>body{{font-family:sans-serif;margin:2em}}.pass{{color:#176d2b}}.fail{{color:#a4161a}}pre{{background:#f4f4f4;padding:.5em;white-space:pre-wrap;max-height:20em;overflow:auto}}details{{margin:.3em 0}}</style></head><body><h1>Conformance report</h1><p>Server: {}<br>Run: {}<br><b>{passed} passed, {} failed</b></p>",
        xml_escape(base_url),
        chrono::Utc::now().to_rfc3339(),
        results.len() - passed
    );
    for r in results {
        let class = if r.passed { "pass" } else { "fail" };
        let _ = write!(
            out,
            "<details{}><summary class=\"{class}\">{} {} :: {}</summary>",
            if r.passed { "" } else { " open" },
            if r.passed { "PASS" } else { "FAIL" },
            xml_escape(r.group),
            xml_escape(&r.name)
        );
        if !r.passed {
            let _ = write!(out, "<p class=\"fail\">{}</p>", xml_escape(&r.message));
        }
        if !r.validation.is_empty() {
            let _ = write!(
                out,
                "<p>Validation issues:</p><ul>{}</ul>",
                r.validation
                    .iter()
                    .map(|v| format!("<li>{}</li>", xml_escape(v)))
                    .collect::<String>()
            );
        }
        for e in &r.exchanges {
            let _ = write!(
                out,
                "<pre>{}\n→ {}\n{}</pre>",
                xml_escape(&e.request),
                e.status,
                xml_escape(&e.response)
            );
        }
        out.push_str("</details>");
    }
    out.push_str("</body></html>\n");
    out
}
