//! The postcode lookup table: postcode or outward code → coordinates, imported from a CSV.
//! Accepts the ONS Postcode Directory layout (`pcds`, `lat`, `long`) and a simple
//! `postcode,latitude,longitude` (or `outcode,latitude,longitude`) file.

use ers_schema::{store, write_tx, DbConnection};

use super::ServiceError;
use crate::domain::Postcode;

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub imported: usize,
    pub skipped: usize,
}

/// (postcode or outward code, latitude, longitude).
pub type PostcodeRow = (String, f64, f64);

/// A postcode or an outward code in its normal form.
pub fn normalise(raw: &str) -> Option<String> {
    if let Ok(p) = Postcode::parse(raw) {
        return Some(p.as_str().to_owned());
    }
    let code = raw.trim().to_ascii_uppercase();
    Postcode::is_outward_code(&code).then_some(code)
}

/// Where a postcode or outward code is, by the postcode table.
#[derive(Debug, Clone, PartialEq)]
pub enum Placed {
    /// Latitude and longitude of the postcode, else of its outward code.
    At(f64, f64),
    /// Not a postcode or outward code: why.
    NotAPostcode(String),
    /// A postcode (in its normal form) the table holds neither it nor its outward code of.
    Unknown(String),
}

/// Places a postcode or outward code by the table.
pub fn place(c: &mut DbConnection, raw: &str) -> Result<Placed, ServiceError> {
    let pc = match crate::domain::PostcodeArea::parse(raw) {
        Ok(pc) => pc,
        Err(e) => return Ok(Placed::NotAPostcode(e.0)),
    };
    Ok(
        match store::postcode_position(c, pc.as_str(), pc.outward())? {
            Some((lat, long)) => Placed::At(lat, long),
            None => Placed::Unknown(pc.as_str().to_owned()),
        },
    )
}

/// Parses the CSV: rows of (postcode, latitude, longitude); rows without usable coordinates
/// (ONS marks those with latitude 99.999999) are counted as skipped.
pub fn parse(reader: impl std::io::Read) -> Result<(Vec<PostcodeRow>, usize), ServiceError> {
    let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| ServiceError::BadRequest(format!("the CSV has no header row: {e}")))?
        .clone();
    let find = |names: &[&str]| {
        headers
            .iter()
            .position(|h| names.iter().any(|n| h.trim().eq_ignore_ascii_case(n)))
    };
    let code_col =
        find(&["pcds", "postcode", "pcd", "pcd7", "pcd8", "outcode"]).ok_or_else(|| {
            ServiceError::BadRequest(
                "the CSV needs a postcode column (pcds, postcode or outcode)".into(),
            )
        })?;
    let lat_col = find(&["lat", "latitude"])
        .ok_or_else(|| ServiceError::BadRequest("the CSV needs a lat or latitude column".into()))?;
    let lon_col = find(&["long", "longitude", "lon"]).ok_or_else(|| {
        ServiceError::BadRequest("the CSV needs a long or longitude column".into())
    })?;
    let mut rows = Vec::new();
    let mut skipped = 0;
    for record in csv.records() {
        let record = record.map_err(|e| ServiceError::BadRequest(format!("CSV: {e}")))?;
        let code = record.get(code_col).and_then(normalise);
        let lat = record
            .get(lat_col)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.abs() <= 90.0);
        let lon = record
            .get(lon_col)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.abs() <= 180.0);
        match (code, lat, lon) {
            (Some(c), Some(la), Some(lo)) => rows.push((c, la, lo)),
            _ => skipped += 1,
        }
    }
    Ok((rows, skipped))
}

/// Loads the rows in batches (each batch one transaction; a re-import replaces coordinates).
pub fn import(
    conn: &mut DbConnection,
    reader: impl std::io::Read,
) -> Result<ImportReport, ServiceError> {
    let (rows, skipped) = parse(reader)?;
    let mut imported = 0;
    for batch in rows.chunks(1000) {
        imported += write_tx(conn, |c| -> Result<usize, ServiceError> {
            Ok(store::upsert_postcodes(c, batch)?)
        })?;
    }
    store::analyze(conn)?;
    Ok(ImportReport { imported, skipped })
}

/// The built-in fixture (a few Yorkshire and city-centre codes), for sandbox data and tests.
pub const SANDBOX_FIXTURE: &str = include_str!("../../fixtures/postcodes.csv");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_and_bad_rows() {
        let ons = "pcd,pcds,lat,long\nLS1  4AP,LS1 4AP,53.796,-1.547\nZZ99 9ZZ,ZZ99 9ZZ,99.999999,0.000000\n";
        let (rows, skipped) = parse(ons.as_bytes()).expect("ons");
        assert_eq!(rows, vec![("LS1 4AP".to_string(), 53.796, -1.547)]);
        assert_eq!(skipped, 1);
        let simple = "outcode,latitude,longitude\nab10,57.13514,-2.11731\nnot a code,1,1\n";
        let (rows, skipped) = parse(simple.as_bytes()).expect("simple");
        assert_eq!(rows, vec![("AB10".to_string(), 57.13514, -2.11731)]);
        assert_eq!(skipped, 1);
        assert!(parse("a,b\n1,2\n".as_bytes()).is_err());
        assert_eq!(parse(SANDBOX_FIXTURE.as_bytes()).expect("fixture").1, 0);
    }
}
