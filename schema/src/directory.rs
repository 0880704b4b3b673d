//! `directory_positions`: where each service is, by specialty. One row per (service, location,
//! specialty coding), the join of a service's `specialty` tokens, its `location` references and
//! those locations' positions (`near`), so that the patient-centred directory search — a
//! specialty within a radius — is one index range (`search::directory_driver`). The store keeps
//! it in the transaction of every write of either type (`refresh`); the migration that made it
//! filled it from the index tables. The resource types and parameter names it joins are here,
//! once, for both sides.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use diesel::prelude::*;

use crate::schema::*;
use crate::store::BULK_CHUNK;
use crate::{DbConnection, StorageError};

/// The service type, its specialty token and its location reference parameters.
pub const SERVICE: &str = "HealthcareService";
pub const SPECIALTY_PARAM: &str = "specialty";
pub const LOCATION_PARAM: &str = "location";
/// The location type and its position parameter.
pub const LOCATION: &str = "Location";
pub const POSITION_PARAM: &str = "near";

/// Rewrites the `directory_positions` rows that depend on these resources, from their index
/// rows (just written): for services, their own rows; for locations, the rows of every service
/// at them. Other resource types have none. A deleted resource has no index rows, so its
/// services' rows go (a service without a position or a specialty has no row).
pub fn refresh(conn: &mut DbConnection, res_type: &str, ids: &[&str]) -> Result<(), StorageError> {
    let services: Vec<String> = match res_type {
        SERVICE => ids.iter().map(|id| (*id).to_owned()).collect(),
        LOCATION => {
            let mut at = Vec::new();
            for chunk in ids.chunks(BULK_CHUNK) {
                at.extend(
                    search_refs::table
                        .filter(search_refs::target_type.eq(LOCATION))
                        .filter(search_refs::target_id.eq_any(chunk))
                        .filter(search_refs::res_type.eq(SERVICE))
                        .filter(search_refs::param.eq(LOCATION_PARAM))
                        .select(search_refs::res_id)
                        .distinct()
                        .load::<String>(conn)?,
                );
            }
            at
        }
        _ => return Ok(()),
    };
    for chunk in services.chunks(BULK_CHUNK) {
        diesel::delete(
            directory_positions::table.filter(directory_positions::service_id.eq_any(chunk)),
        )
        .execute(conn)?;
        let specialties: Vec<(String, String, String)> = search_tokens::table
            .filter(search_tokens::res_type.eq(SERVICE))
            .filter(search_tokens::res_id.eq_any(chunk))
            .filter(search_tokens::param.eq(SPECIALTY_PARAM))
            .select((
                search_tokens::res_id,
                search_tokens::system,
                search_tokens::code,
            ))
            .load(conn)?;
        if specialties.is_empty() {
            continue;
        }
        let locations: Vec<(String, String)> = search_refs::table
            .filter(search_refs::res_type.eq(SERVICE))
            .filter(search_refs::res_id.eq_any(chunk))
            .filter(search_refs::param.eq(LOCATION_PARAM))
            .filter(search_refs::target_type.eq(LOCATION))
            .select((search_refs::res_id, search_refs::target_id))
            .load(conn)?;
        let targets: BTreeSet<&str> = locations.iter().map(|(_, l)| l.as_str()).collect();
        let mut positions = HashMap::new();
        let targets: Vec<&str> = targets.into_iter().collect();
        for part in targets.chunks(BULK_CHUNK) {
            let found: Vec<(String, f64, f64)> = search_geo::table
                .filter(search_geo::res_type.eq(LOCATION))
                .filter(search_geo::res_id.eq_any(part))
                .filter(search_geo::param.eq(POSITION_PARAM))
                .select((
                    search_geo::res_id,
                    search_geo::latitude,
                    search_geo::longitude,
                ))
                .load(conn)?;
            positions.extend(found.into_iter().map(|(id, lat, lon)| (id, (lat, lon))));
        }
        let mut codings: HashMap<&str, Vec<(&String, &String)>> = HashMap::new();
        for (service, system, code) in &specialties {
            codings.entry(service).or_default().push((system, code));
        }
        // A set: one row per (service, location, system, code) however often either repeats.
        let mut rows = BTreeMap::new();
        for (service, location) in &locations {
            let Some(&(latitude, longitude)) = positions.get(location) else {
                continue;
            };
            for &(system, code) in codings.get(service.as_str()).into_iter().flatten() {
                rows.insert((service, location, system, code), (latitude, longitude));
            }
        }
        let rows: Vec<_> = rows
            .into_iter()
            .map(
                |((service, location, system, code), (latitude, longitude))| {
                    (
                        directory_positions::service_id.eq(service),
                        directory_positions::location_id.eq(location),
                        directory_positions::system.eq(system),
                        directory_positions::code.eq(code),
                        directory_positions::latitude.eq(latitude),
                        directory_positions::longitude.eq(longitude),
                    )
                },
            )
            .collect();
        for c in rows.chunks(BULK_CHUNK) {
            on_backend!(conn, |conn| diesel::insert_into(directory_positions::table)
                .values(c)
                .execute(conn))?;
        }
    }
    Ok(())
}
