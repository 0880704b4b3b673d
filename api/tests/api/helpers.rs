//! `spawn_app`: the real server on a random port against a fresh database (a temp SQLite file,
//! or a fresh PostgreSQL database when ERS_TEST_POSTGRES_URL is set).

use std::io::Write;
use std::sync::Once;
use std::time::Duration;

use awc::http::StatusCode;
use diesel::{Connection, PgConnection, RunQueryDsl};
use ers_api::config::{OidcSettings, SeedMode, Settings};
use ers_api::security::jwt::{Jwks, SigningKey};
use ers_api::startup::Application;
use serde_json::{json, Value};
use std::sync::OnceLock;

pub struct TestApp {
    pub base: String,
    pub root: String,
    pub client: awc::Client,
    /// A token of the default test user (every business function at R69 and RCD).
    pub token: String,
    /// The database it runs on (for a second server against the same one).
    pub database_url: String,
}

pub const TEST_ISSUER: &str = "https://cis2.test/openam/oauth2/realms/root/realms/oidc";
pub const TEST_AUDIENCE: &str = "ers-test-client";
pub const TEST_USER: &str = "999000000001";

/// The test identity provider's signing key and its JWKS file (made once per test process).
pub fn idp() -> &'static (SigningKey, String) {
    static IDP: OnceLock<(SigningKey, String)> = OnceLock::new();
    IDP.get_or_init(|| {
        let key = SigningKey::generate("test-key-1").expect("key");
        let path = std::env::temp_dir().join(format!(
            "ers-test-jwks-{}.json",
            uuid::Uuid::new_v4().simple()
        ));
        let jwks = Jwks {
            keys: vec![key.public_jwk()],
        };
        std::fs::write(&path, serde_json::to_vec(&jwks).expect("jwks")).expect("write jwks");
        (key, path.display().to_string())
    })
}

/// Claims of a valid CIS2-style token for `sub`, valid for an hour.
pub fn claims(sub: &str, roles: &[(&str, &str)]) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "sub": sub,
        "iat": now,
        "nbf": now - 5,
        "exp": now + 3600,
        "id_assurance_level": "3",
        "authentication_assurance_level": "3",
        "ers_roles": roles.iter().map(|(bf, org)| json!({"business_function": bf, "org": org})).collect::<Vec<_>>(),
    })
}

/// Signs claims with the test identity provider's key.
pub fn sign(claims: &Value) -> String {
    idp().0.sign(claims).expect("sign")
}

pub fn default_token() -> String {
    let mut roles = Vec::new();
    for bf in [
        "REFERRING_CLINICIAN",
        "REFERRING_CLINICIAN_ADMIN",
        "REFERRING_ADMIN",
        "SERVICE_PROVIDER_CLINICIAN",
        "SERVICE_PROVIDER_CLINICIAN_ADMIN",
        "SERVICE_PROVIDER_ADMIN",
        "SERVICE_DEFINER",
        "INFORMATION_ANALYST",
        "AUDITOR",
    ] {
        for org in ["R69", "RCD"] {
            roles.push((bf, org));
        }
    }
    sign(&claims(TEST_USER, &roles))
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: awc::http::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The first issue's e-RS code and expression (empty where it has none).
    pub fn issue_at(&self) -> (String, String) {
        let issue = &self.json()["issue"][0];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        (
            text(&issue["details"]["coding"][0]["code"]),
            text(&issue["expression"][0]),
        )
    }
    /// Asserts the first issue names this e-RS code at this expression.
    pub fn assert_issue(&self, ers_code: &str, expression: &str) {
        assert_eq!(
            self.issue_at(),
            (ers_code.to_owned(), expression.to_owned()),
            "{}",
            self.text()
        );
    }
    /// Asserts an OperationOutcome error with the status and issue code, returns diagnostics.
    pub fn assert_outcome(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let oo = self.json();
        assert_eq!(oo["resourceType"], "OperationOutcome", "{oo}");
        assert_eq!(oo["issue"][0]["code"], code, "{oo}");
        assert_eq!(oo["issue"][0]["severity"], "error", "{oo}");
        let diag = oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !diag.is_empty(),
            "diagnostics must say what was wrong: {oo}"
        );
        diag
    }
}

static BACKEND_NOTICE: Once = Once::new();

/// A fresh database holding the sandbox data: a copy of one seeded once per test process
/// (`CREATE DATABASE … TEMPLATE` on PostgreSQL, a file copy on SQLite), so that each test
/// does not write the whole sandbox again. The server still runs its (idempotent) seed on it.
pub fn sandbox_database_url() -> String {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let url = database_url();
        let pool = ers_schema::build_pool(&url, 1).expect("template pool");
        let mut conn = pool.get().expect("template connection");
        ers_schema::run_migrations(&mut conn).expect("template migrations");
        ers_api::service::seed::sandbox(&mut conn).expect("template seed");
        // Every connection closed: SQLite folds its WAL into the file; PostgreSQL allows
        // copies only of a database nobody is connected to.
        drop(conn);
        drop(pool);
        url
    });
    match template.strip_prefix("sqlite://") {
        Some(path) => {
            let copy =
                std::env::temp_dir().join(format!("ers-test-{}.db", uuid::Uuid::new_v4().simple()));
            std::fs::copy(path, &copy).expect("copy the sandbox template");
            format!("sqlite://{}", copy.display())
        }
        None => {
            let admin_url = std::env::var("ERS_TEST_POSTGRES_URL").expect("PostgreSQL admin URL");
            let mut url = url::Url::parse(template).expect("template URL");
            let from = url.path().trim_start_matches('/').to_owned();
            let name = format!("ers_test_{}", uuid::Uuid::new_v4().simple());
            let mut admin =
                PgConnection::establish(&admin_url).expect("connect to ERS_TEST_POSTGRES_URL");
            diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {from}"))
                .execute(&mut admin)
                .expect("copy the sandbox template");
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
    }
}

/// A fresh, empty database of the backend under test.
pub fn database_url() -> String {
    match std::env::var("ERS_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(admin_url) => {
            BACKEND_NOTICE.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "ers tests: running on PostgreSQL ({admin_url})"
                );
            });
            let name = format!("ers_test_{}", uuid::Uuid::new_v4().simple());
            let mut admin =
                PgConnection::establish(&admin_url).expect("connect to ERS_TEST_POSTGRES_URL");
            diesel::sql_query(format!("CREATE DATABASE {name}"))
                .execute(&mut admin)
                .expect("create test database");
            let mut url = url::Url::parse(&admin_url).expect("ERS_TEST_POSTGRES_URL is a URL");
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
        None => {
            BACKEND_NOTICE.call_once(|| {
                let _ = writeln!(std::io::stderr(), "ers tests: running on SQLite; PostgreSQL SKIPPED (set ERS_TEST_POSTGRES_URL to run on PostgreSQL)");
            });
            let path =
                std::env::temp_dir().join(format!("ers-test-{}.db", uuid::Uuid::new_v4().simple()));
            format!("sqlite://{}", path.display())
        }
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(SeedMode::None).await
}

pub async fn spawn_with(seed: SeedMode) -> TestApp {
    // Tests fire requests far faster than any integrator may; limiting has its own test.
    spawn_configured(Settings {
        seed,
        rate_limit_per_sec: 0,
        ..Settings::default()
    })
    .await
}

/// Starts the app with `base` settings, on a fresh database and a random port.
pub async fn spawn_configured(base: Settings) -> TestApp {
    let url = if base.seed == SeedMode::Sandbox {
        sandbox_database_url()
    } else {
        database_url()
    };
    spawn_on(&url, base).await
}

/// Starts the app with `base` settings on this database (another instance beside one already
/// running on it, say), on a random port.
pub async fn spawn_on(url: &str, base: Settings) -> TestApp {
    let settings = Settings {
        oidc: base.oidc.clone().or_else(|| {
            Some(OidcSettings {
                issuer: TEST_ISSUER.into(),
                audience: TEST_AUDIENCE.into(),
                jwks: idp().1.clone(),
            })
        }),
        database_url: url.to_owned(),
        bind: "127.0.0.1:0".into(),
        pool_size: 4,
        workers: Some(1),
        ..base
    };
    let database_url = settings.database_url.clone();
    let app = Application::build(settings)
        .await
        .expect("application starts");
    let port = app.port();
    actix_web::rt::spawn(app.run_until_stopped());
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(60))
        .finish();
    TestApp {
        base: format!("http://127.0.0.1:{port}/FHIR/R4"),
        root: format!("http://127.0.0.1:{port}"),
        client,
        token: default_token(),
        database_url,
    }
}

/// The real `ers-server` binary in its own process, against an existing database (no seed),
/// trusting the test identity provider; killed when dropped.
pub struct ServerProcess {
    child: std::process::Child,
    pub app: TestApp,
}

impl ServerProcess {
    pub async fn start(database_url: &str) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_ers-server"))
            .env("ERS_DATABASE_URL", database_url)
            .env("ERS_BIND", format!("127.0.0.1:{port}"))
            .env("ERS_SEED", "none")
            .env("ERS_RATE_LIMIT_PER_SEC", "0")
            .env("ERS_WORKERS", "2")
            .env("ERS_DB_POOL_SIZE", "4")
            .env("ERS_OIDC_ISSUER", TEST_ISSUER)
            .env("ERS_OIDC_AUDIENCE", TEST_AUDIENCE)
            .env("ERS_OIDC_JWKS", &idp().1)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ers-server starts");
        let root = format!("http://127.0.0.1:{port}");
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let mut up = false;
        for _ in 0..240 {
            if let Ok(r) = client.get(format!("{root}/_ping")).send().await {
                if r.status().is_success() {
                    up = true;
                    break;
                }
            }
            actix_web::rt::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            up,
            "ers-server on port {port} did not answer /_ping within a minute"
        );
        ServerProcess {
            child,
            app: TestApp {
                base: format!("{root}/FHIR/R4"),
                root,
                client,
                token: default_token(),
                database_url: database_url.to_owned(),
            },
        }
    }
}

impl ServerProcess {
    /// Sends a signal (`KILL`, `TERM`…) without waiting for the process to end.
    pub fn signal(&self, name: &str) {
        let _ = std::process::Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status();
    }

    /// Waits up to `limit` for the process to end by itself; its exit status if it did.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL: the process ends at once, mid-request, with no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const BF: &str = "NHSD-eRS-Business-Function";
pub const ODS: &str = "NHSD-End-User-Organisation-ODS";

impl TestApp {
    /// The same server through a new client (no pooled connection a long pause may have let
    /// the server close).
    pub fn reconnected(&self) -> TestApp {
        TestApp {
            base: self.base.clone(),
            root: self.root.clone(),
            client: awc::Client::builder()
                .timeout(Duration::from_secs(60))
                .finish(),
            token: self.token.clone(),
            database_url: self.database_url.clone(),
        }
    }

    /// Runs SQL on the server's database behind its back (to leave it as an older version
    /// or a failure would have), on a connection of its own.
    pub fn execute_sql(&self, sql: &str) {
        use diesel::connection::SimpleConnection;
        ers_schema::build_pool(&self.database_url, 1)
            .expect("pool")
            .get()
            .expect("connection")
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else if path.starts_with('/') {
            format!("{}{}", self.root, path)
        } else {
            format!("{}/{}", self.base, path)
        }
    }

    /// A request of the default test user acting as a referring clinician at R69
    /// (A service definer for writes of directory and user data, which only they may make.)
    pub fn req(&self, method: &str, path: &str) -> awc::ClientRequest {
        let first = path
            .trim_start_matches('/')
            .split(['/', '?'])
            .next()
            .unwrap_or_default();
        let directory = [
            "Organization",
            "Practitioner",
            "PractitionerRole",
            "Location",
        ]
        .contains(&first);
        let bf = if directory && method != "GET" {
            "SERVICE_DEFINER"
        } else {
            "REFERRING_CLINICIAN"
        };
        self.authed(method, path)
            .insert_header((BF, bf))
            .insert_header((ODS, "R69"))
    }

    /// A request with the default user's token and no role headers.
    pub fn authed(&self, method: &str, path: &str) -> awc::ClientRequest {
        self.bare(method, path)
            .insert_header(("Authorization", format!("Bearer {}", self.token)))
    }

    /// A request with a given token acting as `bf` at `org`.
    pub fn as_user(
        &self,
        token: &str,
        method: &str,
        path: &str,
        bf: &str,
        org: &str,
    ) -> awc::ClientRequest {
        self.bare(method, path)
            .insert_header(("Authorization", format!("Bearer {token}")))
            .insert_header((BF, bf))
            .insert_header((ODS, org))
    }

    /// A request without caller headers.
    pub fn bare(&self, method: &str, path: &str) -> awc::ClientRequest {
        let m = awc::http::Method::from_bytes(method.as_bytes()).expect("method");
        self.client.request(m, self.url(path))
    }

    pub async fn send(&self, req: awc::ClientRequest, body: Option<Vec<u8>>) -> Reply {
        self.try_send(req, body).await.expect("request sent")
    }

    /// As `send`, but None when there was no whole answer (the connection failed or broke).
    pub async fn try_send(&self, req: awc::ClientRequest, body: Option<Vec<u8>>) -> Option<Reply> {
        let mut res = match body {
            Some(b) => req.send_body(b).await,
            None => req.send().await,
        }
        .ok()?;
        let body = res.body().limit(64 * 1024 * 1024).await.ok()?.to_vec();
        Some(Reply {
            status: res.status(),
            headers: res.headers().clone(),
            body,
        })
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.req("GET", path), None).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let r = self
            .req("POST", path)
            .insert_header(("Content-Type", "application/fhir+json"));
        self.send(r, Some(body.to_string().into_bytes())).await
    }

    pub async fn put_json(&self, path: &str, body: &Value, if_match: Option<&str>) -> Reply {
        let mut r = self
            .req("PUT", path)
            .insert_header(("Content-Type", "application/fhir+json"));
        if let Some(v) = if_match {
            r = r.insert_header(("If-Match", v));
        }
        self.send(r, Some(body.to_string().into_bytes())).await
    }

    /// Creates a resource and returns its id.
    pub async fn create(&self, body: &Value) -> String {
        let t = body["resourceType"].as_str().expect("resourceType");
        let r = self.post_json(t, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "create {t}: {}", r.text());
        r.json()["id"].as_str().expect("id").to_owned()
    }

    pub async fn search(&self, query: &str) -> Value {
        let r = self.get(query).await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text());
        r.json()
    }
}

/// The api package's folder where the tests run (a build may be reused from another checkout
/// of the same tree, so the compile-time path is only the fallback).
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .into()
}

/// `Type/id` of every entry's resource, in the Bundle's order.
pub fn entry_refs(bundle: &Value) -> Vec<String> {
    refs_where(bundle, |_| true)
}

/// The `Type/id` of each entry whose `search.mode` is `mode` (match, include), in order.
pub fn mode_refs(bundle: &Value, mode: &str) -> Vec<String> {
    refs_where(bundle, |e| e["search"]["mode"] == mode)
}

fn refs_where(bundle: &Value, keep: impl Fn(&Value) -> bool) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| keep(e))
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap_or_default(),
                e["resource"]["id"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// Asserts that a Bundle holds each of `wanted` (`Type/id`) among its entries.
pub fn assert_entries(bundle: &Value, wanted: &[String]) {
    let shown = entry_refs(bundle);
    for r in wanted {
        assert!(shown.contains(r), "{r} missing from {shown:?}");
    }
}

/// Ids of the `match` entries of a searchset.
pub fn match_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["search"]["mode"] == "match")
                .filter_map(|x| x["resource"]["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn link(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_owned)
}

pub fn patient(nhs: &str, family: &str, given: &str, birth: &str, gender: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth,
        "address": [{"line": ["1 Test Street"], "city": "Leeds", "postalCode": "LS1 4AP"}],
    })
}

pub fn organization(ods: &str, name: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": ods}],
        "name": name,
        "active": true,
    })
}

/// NHS numbers from the reserved test range that pass Modulus 11.
pub const NHS: [&str; 6] = [
    "9990000018",
    "9990000026",
    "9990000034",
    "9990000042",
    "9990000050",
    "9990000069",
];

/// An AuditEvent search as the default user acting as an auditor at R69 (200 asserted).
pub async fn auditor_search(app: &TestApp, query: &str) -> Value {
    let r = app
        .send(
            app.as_user(
                &app.token,
                "GET",
                &format!("AuditEvent?{query}"),
                "AUDITOR",
                "R69",
            ),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{query}: {}", r.text());
    r.json()
}

/// The subtype codes of an AuditEvent searchset's events, in its order.
pub fn subtypes(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| {
                    x["resource"]["subtype"][0]["code"]
                        .as_str()
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}
