//! Databases for the crate's own tests: PostgreSQL when ERS_TEST_POSTGRES_URL is set (as in
//! the API tests), SQLite otherwise.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::conn::PooledConn;
use crate::DbConnection;

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

#[derive(diesel::QueryableByName)]
struct PgLine {
    #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
    line: String,
}

#[derive(diesel::QueryableByName)]
struct SqliteLine {
    #[diesel(sql_type = diesel::sql_types::Text)]
    detail: String,
}

/// The lines of the plan the database makes for `query` (SQL both databases run) when it
/// uses an index wherever one serves: the tables of a fresh test database are empty, and an
/// empty table is cheapest to scan whole.
pub fn index_plan(conn: &mut DbConnection, query: &str) -> Vec<String> {
    match conn {
        DbConnection::Postgresql(c) => {
            c.batch_execute("SET enable_seqscan = off").expect("set");
            let plan = diesel::sql_query(format!("EXPLAIN {query}"))
                .load::<PgLine>(c)
                .expect("plan");
            c.batch_execute("RESET enable_seqscan").expect("reset");
            plan.into_iter().map(|l| l.line).collect()
        }
        DbConnection::Sqlite(c) => diesel::sql_query(format!("EXPLAIN QUERY PLAN {query}"))
            .load::<SqliteLine>(c)
            .expect("plan")
            .into_iter()
            .map(|l| l.detail)
            .collect(),
    }
}

/// The author of the rows a test writes.
pub fn author() -> crate::Author {
    crate::Author {
        user: None,
        role: "test".into(),
        org: "X".into(),
        request_id: "test".into(),
        client_id: None,
        on_behalf_of: None,
    }
}

/// A token index entry with no system.
pub fn token(param: &str, code: &str) -> crate::TokenEntry {
    crate::TokenEntry {
        param: param.into(),
        system: String::new(),
        code: code.into(),
    }
}

#[derive(diesel::QueryableByName)]
struct Fetched {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// PostgreSQL: the rows of `table` fetched through its indexes so far in this transaction
/// (`pg_stat_xact_user_tables`), to tell a read of a few rows from a read of many.
pub fn rows_fetched(conn: &mut DbConnection, table: &str) -> i64 {
    diesel::sql_query(
        "SELECT COALESCE(sum(idx_tup_fetch), 0)::bigint AS n FROM pg_stat_xact_user_tables WHERE relname = $1",
    )
    .bind::<diesel::sql_types::Text, _>(table)
    .get_result::<Fetched>(conn)
    .expect("stats")
    .n
}
