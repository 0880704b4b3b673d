//! `directory_positions`: where each service is, by specialty. One row per (service, location,
//! specialty coding), the join of a service's `specialty` tokens, its `location` references and
//! those locations' positions (`near`), with the service's active flag and priorities, so that
//! the patient-centred directory search — a specialty within a radius, active, at a priority,
//! nearest first — is one index range (`search::directory_driver`). The store keeps it in the
//! transaction of every write of either type (`refresh`); the migrations that made it filled it
//! from the index tables. The resource types and parameter names it joins are here, once, for
//! both sides.

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
/// The service facts kept beside its positions: its `active` token (`true` → 1) and its
/// `priority` tokens, a bit each for the e-RS priorities, whatever their system.
pub const ACTIVE_PARAM: &str = "active";
pub const PRIORITY_PARAM: &str = "priority";
pub const PRIORITY_BITS: [(&str, i32); 3] = [("ROUTINE", 1), ("URGENT", 2), ("TWO_WEEK_WAIT", 4)];

/// The bit of a priority code (0: not an e-RS priority).
pub fn priority_bit(code: &str) -> i32 {
    PRIORITY_BITS
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(0, |(_, bit)| *bit)
}

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
        // Active (1 or 0) and the priority bits of each service.
        let mut facets: HashMap<String, (i32, i32)> = HashMap::new();
        let tokens: Vec<(String, String, String)> = search_tokens::table
            .filter(search_tokens::res_type.eq(SERVICE))
            .filter(search_tokens::res_id.eq_any(chunk))
            .filter(search_tokens::param.eq_any([ACTIVE_PARAM, PRIORITY_PARAM]))
            .select((
                search_tokens::res_id,
                search_tokens::param,
                search_tokens::code,
            ))
            .load(conn)?;
        for (service, param, code) in tokens {
            let facet = facets.entry(service).or_default();
            match param.as_str() {
                ACTIVE_PARAM if code == "true" => facet.0 = 1,
                PRIORITY_PARAM => facet.1 |= priority_bit(&code),
                _ => {}
            }
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
            let (active, priorities) = facets.get(service.as_str()).copied().unwrap_or_default();
            for &(system, code) in codings.get(service.as_str()).into_iter().flatten() {
                rows.insert(
                    (service, location, system, code),
                    (latitude, longitude, active, priorities),
                );
            }
        }
        let rows: Vec<_> = rows
            .into_iter()
            .map(
                |((service, location, system, code), (latitude, longitude, active, priorities))| {
                    (
                        directory_positions::service_id.eq(service),
                        directory_positions::location_id.eq(location),
                        directory_positions::system.eq(system),
                        directory_positions::code.eq(code),
                        directory_positions::latitude.eq(latitude),
                        directory_positions::longitude.eq(longitude),
                        directory_positions::active.eq(active),
                        directory_positions::priorities.eq(priorities),
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
