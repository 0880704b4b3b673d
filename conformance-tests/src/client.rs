//! A small FHIR client that records every exchange and validates every resource it receives.

use std::time::Duration;

use serde_json::Value;

use crate::report::Exchange;

pub struct Client {
    pub base: String,
    pub root: String,
    pub token: String,
    pub business_function: String,
    pub ods: String,
    http: awc::Client,
}

/// A response, with the validator's errors for every FHIR resource in it.
pub struct Reply {
    pub status: u16,
    pub headers: awc::http::header::HeaderMap,
    pub body: Vec<u8>,
    pub exchange: Exchange,
    pub validation: Vec<String>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// The validator's errors for a resource and, in a Bundle, for each entry's resource.
fn validate_all(v: &Value, out: &mut Vec<String>) {
    let Some(t) = v.get("resourceType").and_then(Value::as_str) else {
        return;
    };
    if t == "Bundle" {
        for e in v
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = e.get("resource") {
                validate_all(r, out);
            }
        }
        return;
    }
    if !ers_fhir::validate::has_definition(t) {
        return;
    }
    // Against each profile the resource claims that is loaded here; without one, the type's
    // default (its e-RS or UK Core profile), else its base R4 definition.
    let claimed: Vec<&ers_fhir::validate::Profile> = v
        .get("meta")
        .and_then(|m| m.get("profile"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(ers_fhir::validate::profile)
        .collect();
    let profiles = if claimed.is_empty() {
        vec![ers_fhir::validate::default_profile(t)]
    } else {
        claimed.into_iter().map(Some).collect()
    };
    for f in profiles
        .into_iter()
        .flat_map(|p| ers_fhir::validate::validate(v, p))
    {
        if f.severity == ers_fhir::validate::Severity::Error {
            out.push(format!(
                "{t}/{}: {} {}",
                v.get("id").and_then(Value::as_str).unwrap_or("-"),
                f.expression,
                f.message
            ));
        }
    }
}

fn shorten(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() > 4000 {
        format!(
            "{}… ({} bytes)",
            &text[..text
                .char_indices()
                .take_while(|(i, _)| *i < 4000)
                .last()
                .map(|(i, _)| i)
                .unwrap_or(0)],
            text.len()
        )
    } else {
        text.into_owned()
    }
}

impl Client {
    pub fn new(base: &str, business_function: &str, ods: &str) -> Self {
        let root = base.trim_end_matches("/FHIR/R4").to_owned();
        Client {
            base: base.to_owned(),
            root,
            token: String::new(),
            business_function: business_function.to_owned(),
            ods: ods.to_owned(),
            http: awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .disable_redirects()
                .finish(),
        }
    }

    pub async fn sandbox_token(&self, user: &str) -> Result<String, String> {
        let url = format!("{}/oauth2/sandbox/token", self.root);
        let mut res = self
            .http
            .post(&url)
            .insert_header(("Content-Type", "application/x-www-form-urlencoded"))
            .send_body(format!("user_id={user}"))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let body = res.body().await.map_err(|e| format!("{url}: {e}"))?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
        v.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "{url} gave no access_token: {}",
                    String::from_utf8_lossy(&body)
                )
            })
    }

    /// Sends a request. `auth`: with the token and role headers; `headers`: extra headers.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        auth: bool,
    ) -> Reply {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}/{}", self.base, path)
        };
        let m = awc::http::Method::from_bytes(method.as_bytes()).unwrap_or(awc::http::Method::GET);
        let mut req = self.http.request(m, &url);
        let mut shown = format!("{method} {url}");
        if auth {
            req = req
                .insert_header(("Authorization", format!("Bearer {}", self.token)))
                .insert_header(("NHSD-eRS-Business-Function", self.business_function.clone()))
                .insert_header(("NHSD-End-User-Organisation-ODS", self.ods.clone()));
            shown.push_str(&format!("\nAuthorization: Bearer …\nNHSD-eRS-Business-Function: {}\nNHSD-End-User-Organisation-ODS: {}", self.business_function, self.ods));
        }
        for (k, v) in headers {
            req = req.insert_header((*k, *v));
            shown.push_str(&format!("\n{k}: {v}"));
        }
        if let Some(b) = body {
            shown.push_str(&format!("\n\n{}", shorten(b)));
        }
        let sent = match body {
            Some(b) => req.send_body(b.to_vec()).await,
            None => req.send().await,
        };
        match sent {
            Ok(mut res) => {
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                let body = res
                    .body()
                    .limit(64 * 1024 * 1024)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                let mut validation = Vec::new();
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    validate_all(&v, &mut validation);
                }
                let exchange = Exchange {
                    request: shown,
                    status,
                    response: shorten(&body),
                };
                Reply {
                    status,
                    headers,
                    body,
                    exchange,
                    validation,
                }
            }
            Err(e) => Reply {
                status: 0,
                headers: Default::default(),
                body: Vec::new(),
                exchange: Exchange {
                    request: shown,
                    status: 0,
                    response: format!("request failed: {e}"),
                },
                validation: Vec::new(),
            },
        }
    }
}
