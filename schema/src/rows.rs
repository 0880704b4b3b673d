//! Row types: what the tables hold, apart from the queries over them.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::schema::*;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = resources)]
pub struct ResourceRow {
    pub res_type: String,
    pub id: String,
    pub version_id: i64,
    pub last_updated: NaiveDateTime,
    pub deleted: i32,
    pub content: String,
}

impl ResourceRow {
    pub fn is_deleted(&self) -> bool {
        self.deleted != 0
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = resource_versions, treat_none_as_default_value = false)]
pub struct VersionRow {
    pub res_type: String,
    pub id: String,
    pub version_id: i64,
    pub last_updated: NaiveDateTime,
    pub method: String,
    pub deleted: i32,
    pub content: String,
    pub author_user: Option<String>,
    pub author_role: String,
    pub author_org: String,
    pub request_id: String,
    /// The application that wrote it (its OAuth client id), when one did.
    pub client_id: Option<String>,
    /// The user a delegate acted for (SDS user id), when acting on someone's behalf.
    pub on_behalf_of: Option<String>,
}

impl VersionRow {
    pub fn is_deleted(&self) -> bool {
        self.deleted != 0
    }
}

/// Who made a change, recorded with every version.
#[derive(Debug, Clone)]
pub struct Author {
    pub user: Option<String>,
    pub role: String,
    pub org: String,
    pub request_id: String,
    /// The application writing (its OAuth client id), when one is.
    pub client_id: Option<String>,
    /// The user a delegate acts for (SDS user id).
    pub on_behalf_of: Option<String>,
}

/// A token index entry (`system|code`); `system` is empty when the element has none.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenEntry {
    pub param: String,
    pub system: String,
    pub code: String,
}

/// A string index entry: `norm` is lower-cased with accents and punctuation folded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StringEntry {
    pub param: String,
    pub norm: String,
    pub exact: String,
}

/// A date index entry: the instant range `[low, high]` the element covers, in UTC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateEntry {
    pub param: String,
    pub low: NaiveDateTime,
    pub high: NaiveDateTime,
}

/// A reference index entry to a local resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefEntry {
    pub param: String,
    pub target_type: String,
    pub target_id: String,
}

/// A position index entry (WGS84 degrees).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub struct GeoEntry {
    pub param: String,
    pub latitude: f64,
    pub longitude: f64,
}

/// A business identifier that must be unique within a resource type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UniqueKey {
    pub system: String,
    pub value: String,
}

/// Everything indexed for one resource version.
#[derive(Debug, Clone, Default)]
pub struct IndexEntries {
    pub tokens: Vec<TokenEntry>,
    pub strings: Vec<StringEntry>,
    pub dates: Vec<DateEntry>,
    pub refs: Vec<RefEntry>,
    pub geo: Vec<GeoEntry>,
    pub unique: Vec<UniqueKey>,
}

impl IndexEntries {
    /// Sorts and removes duplicates (the tables' primary keys forbid them).
    pub fn dedup(&mut self) {
        self.tokens.sort();
        self.tokens.dedup();
        self.strings.sort();
        self.strings
            .dedup_by(|a, b| a.param == b.param && a.exact == b.exact);
        self.dates.sort();
        self.dates.dedup();
        self.refs.sort();
        self.refs.dedup();
        self.unique.sort();
        self.unique.dedup();
        self.geo.dedup_by(|a, b| a.param == b.param);
    }
}

/// An uploaded attachment without its bytes.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = binaries)]
pub struct BinaryMeta {
    pub id: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
    pub filename: Option<String>,
    pub uploaded_by: String,
    pub uploaded_at: NaiveDateTime,
}

/// An attachment to store.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = binaries)]
pub struct NewBinary<'a> {
    pub id: &'a str,
    pub content_type: &'a str,
    pub size: i64,
    pub sha256: &'a str,
    pub filename: Option<&'a str>,
    pub uploaded_by: &'a str,
    pub uploaded_at: NaiveDateTime,
    pub data: &'a [u8],
}

/// One numbered change in the outbox (`seq` is its event number).
#[derive(Debug, Clone, Queryable)]
pub struct OutboxRow {
    pub seq: i64,
    pub res_type: String,
    pub res_id: String,
    pub version_id: i64,
    pub method: String,
    pub occurred: NaiveDateTime,
}

/// The delivery state of a Subscription.
#[derive(Debug, Clone, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = subscription_state)]
#[diesel(treat_none_as_null = true)]
pub struct SubscriptionState {
    pub id: String,
    pub owner_org: String,
    pub owner_role: String,
    pub cursor: i64,
    pub events_sent: i64,
    pub failures: i32,
    pub next_attempt: NaiveDateTime,
    pub lease_until: Option<NaiveDateTime>,
    /// The delivery round holding the lease.
    pub lease_owner: Option<String>,
    pub last_error: Option<String>,
    pub last_sent: NaiveDateTime,
    pub headers: String,
    /// 1 while the handshake is still to be sent.
    pub handshake: i32,
    /// Seconds between heartbeats, if asked for.
    pub heartbeat: Option<i64>,
}

impl SubscriptionState {
    /// Whether there is anything to send at `now` with events up to `last_event`.
    pub fn has_work(&self, last_event: i64, now: NaiveDateTime) -> bool {
        self.handshake == 1
            || self.cursor < last_event
            || self
                .heartbeat
                .is_some_and(|h| now - self.last_sent >= chrono::Duration::seconds(h))
    }
}
