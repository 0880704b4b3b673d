//! Databases for the crate's own tests: PostgreSQL when ERS_TEST_POSTGRES_URL is set (as in
//! the API tests), SQLite otherwise.

use diesel::prelude::*;

use crate::conn::PooledConn;

/// The URL of a fresh, empty database of the backend under test.
pub fn database_url() -> String {
    let name = format!(
        "ers_test_schema_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    match std::env::var("ERS_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(admin) => {
            let mut c = PgConnection::establish(&admin).expect("connect to the admin URL");
            diesel::sql_query(format!("CREATE DATABASE {name}"))
                .execute(&mut c)
                .expect("create the test database");
            let mut url = url::Url::parse(&admin).expect("the admin URL is a URL");
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
        None => format!(
            "sqlite://{}",
            std::env::temp_dir().join(format!("{name}.db")).display()
        ),
    }
}

/// A connection to a fresh database with every migration applied.
pub fn fresh() -> PooledConn {
    let pool = crate::conn::build_pool(&database_url(), 1).expect("connect to the test database");
    let mut conn = pool.get().expect("a connection");
    crate::conn::run_migrations(&mut conn).expect("migrations");
    conn
}
