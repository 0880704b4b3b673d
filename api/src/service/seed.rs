//! Sandbox data: synthetic organisations, practitioners, roles, locations and patients,
//! created through the same use case as any client write. Idempotent: each resource is
//! created only if its business identifier is not there yet.

use crate::fhir::At;
use ers_schema::{Author, DbConnection};
use serde_json::{json, Value};

use super::resource::{self, Created};
use super::ServiceError;
use crate::domain::{BusinessFunction, Caller, NhsNumber, OdsCode, SdsUserId};
use crate::fhir::registry;
use crate::fhir::search;

pub const BUSINESS_FUNCTION_SYSTEM: &str = "https://fhir.nhs.uk/CodeSystem/eRS-BusinessFunction";

/// How many resources of each kind were created (zero on a second run).
#[derive(Debug, Default)]
pub struct SeedReport {
    pub created: usize,
    pub existing: usize,
}

struct Seeder<'a> {
    conn: &'a mut DbConnection,
    author: Author,
    audit: super::audit::AuditDraft,
    report: SeedReport,
}

impl Seeder<'_> {
    /// Creates `body` unless a resource with `system|value` exists; returns its id.
    fn ensure(
        &mut self,
        res_type: &str,
        system: &str,
        value: &str,
        body: Value,
    ) -> Result<String, ServiceError> {
        self.ensure_as(res_type, system, value, body, None, &[])
    }

    /// As `ensure`, with the logical id to give a new resource.
    fn ensure_as(
        &mut self,
        res_type: &str,
        system: &str,
        value: &str,
        body: Value,
        id: Option<String>,
        access: &[String],
    ) -> Result<String, ServiceError> {
        let def = registry::find(res_type)
            .ok_or_else(|| ServiceError::BadRequest(format!("{res_type} is not hosted")))?;
        let criteria = format!("identifier={system}|{value}");
        let params = vec![("identifier".to_owned(), format!("{system}|{value}"))];
        let req = search::parse(def, &params, true).map_err(ServiceError::Invalid)?;
        match resource::create(
            self.conn,
            def,
            body,
            &resource::Writer::new(&self.author, &self.audit).visible_to(access),
            Some((req.query, criteria)),
            id,
        )? {
            Created::New(row) => {
                self.report.created += 1;
                Ok(row.id)
            }
            Created::Existing(row) => {
                self.report.existing += 1;
                Ok(row.id)
            }
        }
    }
}

/// The sandbox's commissioners (ODS codes): R69 is part of the first, R68 of the second.
pub const NORTH_ICB: &str = "QZN";
pub const SOUTH_ICB: &str = "QZS";
/// A bookable sandbox service commissioned by `SOUTH_ICB` alone: referrals of R68's patients
/// find it, R69's do not.
pub const SOUTH_ONLY: &str = "60000";
/// The sandbox referrals' referring organisation.
const REFERRER: &str = "R69";

fn organization(ods: &str, name: &str, kind: &str, postcode: &str, city: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "identifier": [{"system": OdsCode::ORGANIZATION_SYSTEM, "value": ods}],
        "active": true,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": kind}]}],
        "name": name,
        "telecom": [{"system": "phone", "value": "0113 496 0000", "use": "work"}],
        "address": [{"line": ["1 Sandbox Street"], "city": city, "postalCode": postcode, "country": "GB"}],
    })
}

fn practitioner(sds: &str, family: &str, given: &str, prefix: &str) -> Value {
    json!({
        "resourceType": "Practitioner",
        "identifier": [{"system": SdsUserId::SYSTEM, "value": sds}],
        "active": true,
        "name": [{"use": "official", "family": family, "given": [given], "prefix": [prefix]}],
    })
}

fn role(role_id: &str, practitioner_id: &str, org_id: &str, bf: BusinessFunction) -> Value {
    json!({
        "resourceType": "PractitionerRole",
        "identifier": [{"system": crate::fhir::resources::practitioner_role::ROLE_SYSTEM, "value": role_id}],
        "active": true,
        "practitioner": {"reference": format!("Practitioner/{practitioner_id}")},
        "organization": {"reference": format!("Organization/{org_id}")},
        "code": [{"coding": [{"system": BUSINESS_FUNCTION_SYSTEM, "code": bf.code()}]}],
    })
}

const FAMILIES: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Patel",
    "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall",
    "Wood", "Khan",
];
const GIVEN_F: &[&str] = &[
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Isabella", "Rosie", "Sophia",
];
const GIVEN_M: &[&str] = &[
    "Oliver", "George", "Noah", "Arthur", "Harry", "Leo", "Muhammad", "Jack", "Charlie", "Oscar",
];
const PLACES: &[(&str, &str)] = &[
    ("Leeds", "LS1 4AP"),
    ("Leeds", "LS6 2AB"),
    ("Harrogate", "HG1 5AA"),
    ("York", "YO1 7HH"),
    ("Bradford", "BD1 1AA"),
    ("Wakefield", "WF1 2AB"),
];

fn patient(
    nhs: &str,
    family: &str,
    given: &str,
    gender: &str,
    birth: &str,
    place: (&str, &str),
    gp_org: &str,
) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": NhsNumber::SYSTEM, "value": nhs}],
        "active": true,
        "name": [{"use": "official", "family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": "07700 900000", "use": "mobile"}],
        "gender": gender,
        "birthDate": birth,
        "address": [{"use": "home", "line": ["10 Example Road"], "city": place.0, "postalCode": place.1, "country": "GB"}],
        "generalPractitioner": [{"reference": format!("Organization/{gp_org}")}],
    })
}

/// Creates the sandbox data set.
pub fn sandbox(conn: &mut DbConnection) -> Result<SeedReport, ServiceError> {
    if ers_schema::store::postcode_count(conn)? == 0 {
        super::postcodes::import(conn, super::postcodes::SANDBOX_FIXTURE.as_bytes())?;
    }
    let author = Author {
        user: None,
        role: "SYSTEM".into(),
        org: "ERS".into(),
        request_id: format!("seed-{}", uuid::Uuid::new_v4()),
        client_id: None,
        on_behalf_of: None,
    };
    let audit = super::audit::AuditDraft {
        user_id: Some("ers-seed".into()),
        role: Some("SYSTEM".into()),
        method: "SEED".into(),
        path: "sandbox".into(),
        request_id: author.request_id.clone(),
        ..Default::default()
    };
    let mut s = Seeder {
        conn,
        author,
        audit,
        report: SeedReport::default(),
    };
    let ods = OdsCode::ORGANIZATION_SYSTEM;
    // Commissioners (integrated care boards, fictional codes): each GP practice is part of one,
    // whose commissioning rules its patients' referrals follow.
    let mut icbs = Vec::new();
    for (code, name, postcode, city) in [
        (
            NORTH_ICB,
            "Sandbox Integrated Care Board North",
            "LS1 4AP",
            "Leeds",
        ),
        (
            SOUTH_ICB,
            "Sandbox Integrated Care Board South",
            "WF1 2AB",
            "Wakefield",
        ),
    ] {
        icbs.push(s.ensure(
            "Organization",
            ods,
            code,
            organization(code, name, "pay", postcode, city),
        )?);
    }
    let part_of = |mut org: Value, icb: &str| {
        org["partOf"] = json!({"reference": format!("Organization/{icb}")});
        org
    };
    // Referrers (GP practices) and providers. Names are synthetic.
    let r69 = s.ensure(
        "Organization",
        ods,
        "R69",
        part_of(
            organization(
                "R69",
                "Sandbox Referring Practice North",
                "prov",
                "LS1 4AP",
                "Leeds",
            ),
            &icbs[0],
        ),
    )?;
    let r68 = s.ensure(
        "Organization",
        ods,
        "R68",
        part_of(
            organization(
                "R68",
                "Sandbox Referring Practice South",
                "prov",
                "WF1 2AB",
                "Wakefield",
            ),
            &icbs[1],
        ),
    )?;
    let rcd = s.ensure(
        "Organization",
        ods,
        "RCD",
        organization(
            "RCD",
            "Sandbox Acute Hospitals Trust",
            "prov",
            "HG1 5AA",
            "Harrogate",
        ),
    )?;
    let rr8 = s.ensure(
        "Organization",
        ods,
        "RR8",
        organization(
            "RR8",
            "Sandbox Teaching Hospitals Trust",
            "prov",
            "LS1 3EX",
            "Leeds",
        ),
    )?;

    let site = OdsCode::SITE_SYSTEM;
    let mut sites = Vec::new();
    for (code, name, org, pc, city, lat, lon) in [
        (
            "RCD01",
            "Sandbox District Hospital",
            &rcd,
            "HG2 7SX",
            "Harrogate",
            53.9871,
            -1.5222,
        ),
        (
            "RR801",
            "Sandbox General Infirmary",
            &rr8,
            "LS1 3EX",
            "Leeds",
            53.8017,
            -1.5519,
        ),
        (
            "RR802",
            "Sandbox Chapel Allerton Clinic",
            &rr8,
            "LS7 4SA",
            "Leeds",
            53.8296,
            -1.5357,
        ),
    ] {
        let id = s.ensure(
            "Location",
            site,
            code,
            json!({
                "resourceType": "Location",
                "identifier": [{"system": site, "value": code}],
                "status": "active",
                "name": name,
                "mode": "instance",
                "address": {"line": ["Sandbox Road"], "city": city, "postalCode": pc, "country": "GB"},
                "position": {"longitude": lon, "latitude": lat},
                "managingOrganization": {"reference": format!("Organization/{org}")},
            }),
        )?;
        sites.push(id);
    }

    let sds = SdsUserId::SYSTEM;
    let rc = s.ensure(
        "Practitioner",
        sds,
        "021600556514",
        practitioner("021600556514", "Referrer", "Rachel", "Dr"),
    )?;
    let multi = s.ensure(
        "Practitioner",
        sds,
        "000000000101",
        practitioner("000000000101", "Admin", "Alex", "Mx"),
    )?;
    let spc = s.ensure(
        "Practitioner",
        sds,
        "555032006106",
        practitioner("555032006106", "Provider", "Priya", "Dr"),
    )?;
    let spca = s.ensure(
        "Practitioner",
        sds,
        "103264992985",
        practitioner("103264992985", "Assistant", "Sam", "Mr"),
    )?;
    let spa = s.ensure(
        "Practitioner",
        sds,
        "555032006103",
        practitioner("555032006103", "Bookings", "Bea", "Ms"),
    )?;
    let definer = s.ensure(
        "Practitioner",
        sds,
        "555031998110",
        practitioner("555031998110", "Definer", "Dana", "Ms"),
    )?;
    let analyst = s.ensure(
        "Practitioner",
        sds,
        "555031998111",
        practitioner("555031998111", "Analyst", "Ian", "Mr"),
    )?;
    let commissioner = s.ensure(
        "Practitioner",
        sds,
        "555031998113",
        practitioner("555031998113", "Commissioner", "Cal", "Mr"),
    )?;
    let auditor = s.ensure(
        "Practitioner",
        sds,
        "555031998112",
        practitioner("555031998112", "Auditor", "Ada", "Ms"),
    )?;

    let roles = crate::fhir::resources::practitioner_role::ROLE_SYSTEM;
    use BusinessFunction as B;
    let mut role_ids = Vec::new();
    for (id, who, org, bf) in [
        ("100000000001", &rc, &r69, B::ReferringClinician),
        ("100000000002", &multi, &r69, B::ReferringClinicianAdmin),
        ("100000000003", &multi, &r68, B::ReferringAdmin),
        ("100000000004", &spc, &rcd, B::ServiceProviderClinician),
        (
            "100000000005",
            &spca,
            &rcd,
            B::ServiceProviderClinicianAdmin,
        ),
        ("100000000006", &spa, &rcd, B::ServiceProviderAdmin),
        ("100000000007", &definer, &rr8, B::ServiceDefiner),
        ("100000000008", &analyst, &rr8, B::InformationAnalyst),
        ("100000000009", &auditor, &rr8, B::Auditor),
        ("100000000010", &commissioner, &rr8, B::Commissioner),
        ("100000000011", &analyst, &rcd, B::InformationAnalyst),
    ] {
        role_ids.push(s.ensure("PractitionerRole", roles, id, role(id, who, org, bf))?);
    }

    // The NHS sandbox test patients, then synthetic patients from the reserved test range.
    let nhs = NhsNumber::SYSTEM;
    let hannah = s.ensure(
        "Patient",
        nhs,
        "9912003888",
        patient(
            "9912003888",
            "Deacon",
            "Hannah",
            "female",
            "1958-04-12",
            PLACES[0],
            &r69,
        ),
    )?;
    let terry = s.ensure(
        "Patient",
        nhs,
        "9462979626",
        patient(
            "9462979626",
            "Morgan",
            "Terry",
            "male",
            "1972-11-30",
            PLACES[3],
            &r68,
        ),
    )?;
    for i in 0..40u32 {
        let n = NhsNumber::test_number(i * 7 + 3);
        let female = i % 2 == 0;
        let given = if female {
            GIVEN_F[i as usize % GIVEN_F.len()]
        } else {
            GIVEN_M[i as usize % GIVEN_M.len()]
        };
        let family = FAMILIES[(i as usize * 3) % FAMILIES.len()];
        let birth = format!(
            "{}-{:02}-{:02}",
            1940 + (i * 2) % 80,
            1 + i % 12,
            1 + (i * 5) % 28
        );
        let place = PLACES[i as usize % PLACES.len()];
        let gp = if i % 3 == 0 { &r68 } else { &r69 };
        s.ensure(
            "Patient",
            nhs,
            n.as_str(),
            patient(
                n.as_str(),
                family,
                given,
                if female { "female" } else { "male" },
                &birth,
                place,
                gp,
            ),
        )?;
    }
    // More providers across England, each with one site (synthetic names, fictional Z codes).
    let mut more = Vec::new();
    for (ods, name, city, postcode, lat, lon) in MORE_PROVIDERS {
        let org = s.ensure(
            "Organization",
            OdsCode::ORGANIZATION_SYSTEM,
            ods,
            organization(ods, name, "prov", postcode, city),
        )?;
        let site_code = format!("{ods}01");
        let site_id = s.ensure(
            "Location",
            site,
            &site_code,
            json!({
                "resourceType": "Location",
                "identifier": [{"system": site, "value": site_code}],
                "status": "active",
                "name": format!("{name} main site"),
                "mode": "instance",
                "address": {"line": ["Sandbox Road"], "city": city, "postalCode": postcode, "country": "GB"},
                "position": {"longitude": lon, "latitude": lat},
                "managingOrganization": {"reference": format!("Organization/{org}")},
            }),
        )?;
        more.push((org, *ods, site_id));
    }
    let mut providers: Vec<(&String, &str, &String)> = vec![
        (&rcd, "RCD", &sites[0]),
        (&rr8, "RR8", &sites[1]),
        (&rr8, "RR8", &sites[2]),
    ];
    providers.extend(more.iter().map(|(o, c, l)| (o, *c, l)));
    directory(&mut s, &providers)?;
    let made = referrals(&mut s, &role_ids[0], &[&hannah, &terry])?;
    appointments(&mut s, &made, &r69)?;
    letters(&mut s, &made, &r69)?;
    advice(&mut s, &role_ids[0], &hannah)?;
    // Fresh statistics, so the query planner sees the data just loaded (PostgreSQL servers
    // without autovacuum would otherwise plan searches for empty tables).
    ers_schema::store::analyze(s.conn)?;
    Ok(s.report)
}

/// (ODS, name, city, postcode, latitude, longitude): coordinates of our own postcode fixture.
const MORE_PROVIDERS: &[(&str, &str, &str, &str, f64, f64)] = &[
    (
        "ZA1",
        "Sandbox London Hospitals Trust",
        "London",
        "SW1A 1AA",
        51.5010,
        -0.1416,
    ),
    (
        "ZA2",
        "Sandbox Manchester Trust",
        "Manchester",
        "M1 1AA",
        53.4780,
        -2.2360,
    ),
    (
        "ZA3",
        "Sandbox Birmingham Trust",
        "Birmingham",
        "B1 1AA",
        52.4800,
        -1.9030,
    ),
    (
        "ZA4",
        "Sandbox Newcastle Trust",
        "Newcastle upon Tyne",
        "NE1 1AA",
        54.9710,
        -1.6130,
    ),
    (
        "ZA5",
        "Sandbox Bristol Trust",
        "Bristol",
        "BS1 1AA",
        51.4540,
        -2.5930,
    ),
    (
        "ZA6",
        "Sandbox Cambridge Trust",
        "Cambridge",
        "CB2 0QQ",
        52.1880,
        0.1290,
    ),
    (
        "ZA7",
        "Sandbox Oxford Trust",
        "Oxford",
        "OX1 1AA",
        51.7520,
        -1.2580,
    ),
    (
        "ZA8",
        "Sandbox York Trust",
        "York",
        "YO1 7HH",
        53.9590,
        -1.0820,
    ),
];

const SPECIALTIES: &[(&str, &str)] = &[
    ("CARDIOLOGY", "Cardiology"),
    ("DERMATOLOGY", "Dermatology"),
    ("ENT", "Ear, Nose and Throat"),
    ("GASTROENTEROLOGY", "Gastroenterology"),
    ("GYNAECOLOGY", "Gynaecology"),
    ("NEUROLOGY", "Neurology"),
    ("OPHTHALMOLOGY", "Ophthalmology"),
    ("ORTHOPAEDICS", "Trauma and Orthopaedics"),
    ("RESPIRATORY", "Respiratory Medicine"),
    ("UROLOGY", "Urology"),
    ("2WW", "2 Week Wait"),
];

/// (service id, specialty index, request flows, priorities, how many slots).
type PlannedService = (String, usize, Vec<&'static str>, Vec<&'static str>, usize);

/// Services, schedules and slots of the sandbox Directory of Services, with the NHS sandbox
/// service ids (10000 no slots, 11000 many slots, 12000 few, 50001 triage, 11014 A&G...) as
/// their identifiers and logical ids.
fn directory(
    s: &mut Seeder<'_>,
    providers: &[(&String, &str, &String)],
) -> Result<(), ServiceError> {
    use crate::fhir::resources::healthcare_service::{
        APPOINTMENT_TYPE_SYSTEM, CLINIC_TYPE_SYSTEM, ELIGIBILITY_SYSTEM, PRIORITY_SYSTEM,
        SERVICE_SYSTEM, SPECIALTY_SYSTEM,
    };
    // (id, specialty index, flows, priorities, slots to create)
    let mut plan: Vec<PlannedService> = vec![
        (
            "10000".into(),
            0,
            vec!["BOOKABLE"],
            vec!["ROUTINE", "URGENT"],
            0,
        ),
        (
            "11000".into(),
            0,
            vec!["BOOKABLE"],
            vec!["ROUTINE", "URGENT"],
            12,
        ),
        ("11002".into(), 1, vec!["BOOKABLE"], vec!["ROUTINE"], 6),
        (
            "11014".into(),
            0,
            vec!["ADVICE_AND_GUIDANCE"],
            vec!["ROUTINE", "URGENT"],
            0,
        ),
        ("11021".into(), 2, vec!["BOOKABLE"], vec!["ROUTINE"], 6),
        ("12000".into(), 3, vec!["BOOKABLE"], vec!["ROUTINE"], 1),
        (
            "13000".into(),
            4,
            vec!["BOOKABLE"],
            vec!["ROUTINE", "URGENT"],
            4,
        ),
        ("14000".into(), 5, vec!["BOOKABLE"], vec!["ROUTINE"], 4),
        (
            "50001".into(),
            0,
            vec!["REVIEW"],
            vec!["ROUTINE", "URGENT"],
            0,
        ),
        ("50110".into(), 10, vec!["REVIEW"], vec!["TWO_WEEK_WAIT"], 0),
    ];
    // Rounds of every specialty in all three request flows, spread over the providers.
    for round in 1..8 {
        for i in 0..SPECIALTIES.len() {
            let base = 30000 + round * 1000 + i * 10;
            plan.push((
                format!("{base}"),
                i,
                vec!["BOOKABLE"],
                vec!["ROUTINE", "URGENT", "TWO_WEEK_WAIT"],
                1,
            ));
            plan.push((
                format!("{}", base + 1),
                i,
                vec!["REVIEW"],
                vec!["ROUTINE", "URGENT"],
                0,
            ));
            plan.push((
                format!("{}", base + 2),
                i,
                vec!["ADVICE_AND_GUIDANCE"],
                vec!["ROUTINE", "URGENT"],
                0,
            ));
        }
    }
    for (i, _) in SPECIALTIES.iter().enumerate() {
        plan.push((
            format!("{}", 20000 + i * 10),
            i,
            vec!["BOOKABLE"],
            vec!["ROUTINE", "URGENT"],
            2,
        ));
        plan.push((
            format!("{}", 20001 + i * 10),
            i,
            vec!["REVIEW"],
            vec!["ROUTINE", "URGENT", "TWO_WEEK_WAIT"],
            0,
        ));
        plan.push((
            format!("{}", 20002 + i * 10),
            i,
            vec!["ADVICE_AND_GUIDANCE"],
            vec!["ROUTINE"],
            0,
        ));
    }
    // The NHS sandbox's A033 and A035 examples read services 1 to 4 (`HealthcareService/2`,
    // `HealthcareService?_id=1,2` and `3,4`; `5,6` finds none). Last, so that every service
    // before keeps its provider, eligibility and clinic type.
    plan.extend([
        ("1".to_owned(), 1, vec!["BOOKABLE"], vec!["ROUTINE"], 0),
        (
            "2".to_owned(),
            1,
            vec!["BOOKABLE"],
            vec!["ROUTINE", "URGENT"],
            2,
        ),
        ("3".to_owned(), 2, vec!["BOOKABLE"], vec!["ROUTINE"], 0),
        ("4".to_owned(), 3, vec!["BOOKABLE"], vec!["ROUTINE"], 0),
        (
            SOUTH_ONLY.to_owned(),
            0,
            vec!["BOOKABLE"],
            vec!["ROUTINE", "URGENT"],
            2,
        ),
    ]);
    // Slots start on the next weekday at 09:00 UTC; their ids fix them, so a later restart
    // does not add more.
    let today = chrono::Utc::now().date_naive();
    for (n, (sid, spec, flows, priorities, slots)) in plan.into_iter().enumerate() {
        let (org_id, ods, site_id) = providers[n % providers.len()];
        let (code, display) = SPECIALTIES[spec];
        let characteristic =
            crate::fhir::resources::healthcare_service::characteristics(&flows, &priorities);
        // Age and gender treated: gynaecology treats women, urology men; a few services treat
        // only adults or only children (the rest, everyone).
        let mut eligibility: Vec<&str> = match code {
            "GYNAECOLOGY" => vec!["FEMALE_ONLY"],
            "UROLOGY" => vec!["MALE_ONLY"],
            _ => Vec::new(),
        };
        match n % 9 {
            4 => eligibility.push("ADULTS_ONLY"),
            7 => eligibility.push("CHILDREN_ONLY"),
            _ => {}
        }
        let eligibility: Vec<Value> = eligibility
            .into_iter()
            .map(|e| json!({"code": {"coding": [{"system": ELIGIBILITY_SYSTEM, "code": e}]}}))
            .collect();
        let mut types = vec![
            json!({"coding": [{"system": APPOINTMENT_TYPE_SYSTEM, "code": if flows[0] == "REVIEW" { "ASSESSMENT_SERVICE" } else { "FIRST_OUTPATIENT" }}]}),
        ];
        let clinic_types = crate::fhir::terminology::clinic_types_of(code);
        if !clinic_types.is_empty() {
            let ct = clinic_types[n % clinic_types.len()];
            types.push(json!({"coding": [{"system": CLINIC_TYPE_SYSTEM, "code": ct}]}));
        }
        let kind = match flows[0] {
            "REVIEW" => "Referral Assessment Service",
            "ADVICE_AND_GUIDANCE" => "Advice and Guidance",
            _ => "Clinic",
        };
        let mut body = json!({
            "resourceType": "HealthcareService",
            "identifier": [{"system": SERVICE_SYSTEM, "value": sid}],
            "active": true,
            "providedBy": {"reference": format!("Organization/{org_id}")},
            "location": [{"reference": format!("Location/{site_id}")}],
            "type": types,
            "specialty": [{"coding": [{"system": SPECIALTY_SYSTEM, "code": code, "display": display}]}],
            "name": format!("{display} {kind} ({ods}) {sid}"),
            "characteristic": characteristic,
        });
        if !eligibility.is_empty() {
            body["eligibility"] = Value::Array(eligibility);
        }
        if sid == SOUTH_ONLY {
            body["extension"] = json!([{
                "url": crate::fhir::resources::healthcare_service::COMMISSIONED_BY_EXTENSION,
                "valueIdentifier": {"system": OdsCode::ORGANIZATION_SYSTEM, "value": SOUTH_ICB}
            }]);
        }
        // The service's e-RS id is its logical id too, as in e-RS (A033 reads
        // HealthcareService/11000; A015 searches schedule.actor:HealthcareService=11000).
        let service = s.ensure_as(
            "HealthcareService",
            SERVICE_SYSTEM,
            &sid,
            body,
            Some(sid.clone()),
            &[],
        )?;
        if slots == 0 {
            continue;
        }
        let schedule_id = format!("{sid}-schedule");
        let schedule = s.ensure(
            "Schedule",
            "https://fhir.nhs.uk/Id/ers-schedule",
            &schedule_id,
            json!({
                "resourceType": "Schedule",
                "identifier": [{"system": "https://fhir.nhs.uk/Id/ers-schedule", "value": schedule_id}],
                "active": true,
                "actor": [{"reference": format!("HealthcareService/{service}")}],
            }),
        )?;
        let mut day = today;
        let mut made = 0;
        while made < slots {
            day = day.succ_opt().unwrap_or(day);
            if matches!(
                chrono::Datelike::weekday(&day),
                chrono::Weekday::Sat | chrono::Weekday::Sun
            ) {
                continue;
            }
            for hour in [9, 11] {
                if made == slots {
                    break;
                }
                let start = day.and_hms_opt(hour, 0, 0).unwrap_or_default();
                let slot_id = format!("{sid}-{made}");
                let priority = priorities[made % priorities.len()];
                s.ensure(
                    "Slot",
                    "https://fhir.nhs.uk/Id/alternative-slot",
                    &slot_id,
                    json!({
                        "resourceType": "Slot",
                        "identifier": [{"system": "https://fhir.nhs.uk/Id/alternative-slot", "value": slot_id}],
                        "schedule": {"reference": format!("Schedule/{schedule}")},
                        "status": "free",
                        "start": crate::fhir::datetime::instant(start),
                        "end": crate::fhir::datetime::instant(start + chrono::Duration::minutes(20)),
                        "appointmentType": {"coding": [{"system": PRIORITY_SYSTEM, "code": priority}]},
                    }),
                )?;
                made += 1;
            }
        }
    }
    Ok(())
}

/// The id of the resource with a business identifier, if any.
fn find(
    s: &mut Seeder<'_>,
    res_type: &str,
    system: &str,
    value: &str,
) -> Result<Option<String>, ServiceError> {
    let def = registry::find(res_type)
        .ok_or_else(|| ServiceError::BadRequest(format!("{res_type} is not hosted")))?;
    let params = vec![("identifier".to_owned(), format!("{system}|{value}"))];
    let req = search::parse(def, &params, true).map_err(ServiceError::Invalid)?;
    let (rows, _) = ers_schema::search::search(s.conn, &req.query, false)?;
    Ok(rows.into_iter().next().map(|r| r.id))
}

/// Referrals with the NHS sandbox UBRNs (000000070000-000000070012, with the meanings of the
/// NHS sandbox) and one in each remaining state (000000070013-000000070016).
/// A seeded referral: its UBRN, id, body and the service it is with (or its first
/// shortlisted one).
struct Seeded {
    ubrn: String,
    id: String,
    body: Value,
    service: String,
}

fn referrals(
    s: &mut Seeder<'_>,
    requester: &str,
    patients: &[&String],
) -> Result<Vec<Seeded>, ServiceError> {
    use crate::domain::referral::ReferralState as S;
    use crate::fhir::resources::healthcare_service::SERVICE_SYSTEM;
    use crate::fhir::resources::service_request::{self as sr, StateRecord};
    let mut service = |sid: &str| -> Result<String, ServiceError> {
        find(s, "HealthcareService", SERVICE_SYSTEM, sid)?
            .map(|id| format!("HealthcareService/{id}"))
            .ok_or_else(|| ServiceError::BadRequest(format!("sandbox service {sid} is missing")))
    };
    let (dbs, ibs, triage, more) = (
        service("11000")?,
        service("12000")?,
        service("50001")?,
        service("13000")?,
    );
    let review = sr::REVIEW_OUTCOME_SYSTEM;
    let cancel = "https://fhir.nhs.uk/CodeSystem/eRS-ReferralCancellationReason";
    let appt_cancel = "https://fhir.nhs.uk/CodeSystem/eRS-AppointmentCancellationReason";
    // (UBRN, meaning, state, reason, comment, shortlist, the service it is with).
    type Planned<'a> = (
        &'a str,
        &'a str,
        S,
        Option<(&'a str, &'a str)>,
        Option<&'a str>,
        Vec<&'a String>,
        Option<&'a String>,
    );
    let plan: Vec<Planned<'_>> = vec![
        (
            "000000070000",
            "Unbooked referral",
            S::NotBooked,
            None,
            None,
            vec![&dbs, &more],
            None,
        ),
        (
            "000000070001",
            "Booked into a directly bookable service",
            S::Booked,
            None,
            None,
            vec![&dbs],
            Some(&dbs),
        ),
        (
            "000000070002",
            "Booked into an indirectly bookable service",
            S::Booked,
            None,
            None,
            vec![&ibs],
            Some(&ibs),
        ),
        (
            "000000070003",
            "Deferred to the provider (no slots)",
            S::DeferredToProvider,
            None,
            None,
            vec![&dbs],
            Some(&dbs),
        ),
        (
            "000000070004",
            "Converted from Advice and Guidance",
            S::TriagedProviderToAction,
            None,
            Some("Converted from an A&G request"),
            vec![&dbs],
            Some(&dbs),
        ),
        (
            "000000070005",
            "With a related referral (000000070000)",
            S::NotBooked,
            None,
            None,
            vec![&dbs],
            None,
        ),
        (
            "000000070006",
            "Awaiting triage",
            S::AwaitingTriage,
            None,
            None,
            vec![&triage],
            Some(&triage),
        ),
        (
            "000000070007",
            "Triage response: returned with advice",
            S::TriageResponse,
            Some((review, "RETURN_TO_REFERRER_WITH_ADVICE")),
            Some("Please arrange an echocardiogram first"),
            vec![&triage],
            None,
        ),
        (
            "000000070008",
            "Rejected by the provider",
            S::Rejected,
            Some((appt_cancel, "SERVICE_INAPPROPRIATE")),
            Some("Not seen in this clinic"),
            vec![&dbs],
            None,
        ),
        (
            "000000070009",
            "Cancelled referral",
            S::CancelledReferral,
            Some((cancel, "TREATMENT_NO_LONGER_REQUIRED")),
            None,
            vec![&dbs],
            None,
        ),
        (
            "000000070010",
            "Accepted by triage, provider to book",
            S::TriagedProviderToAction,
            Some((review, "ACCEPT_REFER_BOOK_LATER")),
            Some("Will book into next clinic"),
            vec![&triage],
            Some(&triage),
        ),
        (
            "000000070011",
            "With additional requirements",
            S::NotBooked,
            None,
            None,
            vec![&dbs],
            None,
        ),
        (
            "000000070012",
            "Attachments unavailable",
            S::NotBooked,
            None,
            None,
            vec![&dbs],
            None,
        ),
        (
            "000000070013",
            "Appointment cancelled by the patient",
            S::ApptCancelledByPatient,
            Some((appt_cancel, "PATIENT_ILL")),
            None,
            vec![&dbs],
            None,
        ),
        (
            "000000070014",
            "Appointment cancelled by the provider",
            S::ApptCancelledByProvider,
            Some((appt_cancel, "CLINIC_CANCELLED")),
            None,
            vec![&dbs],
            None,
        ),
        (
            "000000070015",
            "Did not attend",
            S::DidNotAttend,
            None,
            None,
            vec![&dbs],
            None,
        ),
        (
            "000000070016",
            "Assessment result",
            S::AssessmentResult,
            None,
            Some("Assessment submitted"),
            vec![&triage],
            None,
        ),
    ];
    let mut first = None;
    let mut made = Vec::new();
    for (i, (ubrn, meaning, state, reason, comment, shortlist, with)) in
        plan.into_iter().enumerate()
    {
        // Service 12000 takes routine referrals only.
        let priority = if shortlist.contains(&&ibs) {
            "ROUTINE"
        } else {
            ["ROUTINE", "URGENT"][i % 2]
        };
        let mut body = json!({
            "resourceType": "ServiceRequest",
            "identifier": [{"system": sr::UBRN_SYSTEM, "value": ubrn}],
            "extension": [{"url": sr::PRIORITY_EXTENSION, "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": priority}}],
            "status": "active",
            "intent": "order",
            "category": [{"coding": [{"system": sr::REFERRAL_CATEGORY.0, "code": sr::REFERRAL_CATEGORY.1, "display": sr::REFERRAL_CATEGORY.2}]}],
            "priority": sr::fhir_priority(priority).unwrap_or("routine"),
            "subject": {"reference": format!("Patient/{}", patients[i % patients.len()])},
            "authoredOn": "2026-11-02T09:30:00Z",
            "requester": {"reference": format!("PractitionerRole/{requester}")},
            "performer": shortlist.iter().map(|r| json!({"reference": r})).collect::<Vec<_>>(),
            "reasonCode": [{"text": format!("Sandbox referral: {meaning}")}],
        });
        super::referral::commission(s.conn, &mut body, REFERRER)?;
        if ubrn == "000000070005" {
            if let Some(f) = &first {
                body["supportingInfo"] = json!([{"reference": format!("ServiceRequest/{f}")}]);
            }
        }
        if ubrn == "000000070011" {
            body["note"] = json!([{"text": "Additional requirements: wheelchair access; interpreter (Polish)"}]);
        }
        sr::set_state(
            &mut body,
            &StateRecord {
                state,
                reason: reason.map(|(a, b)| (a.to_owned(), b.to_owned())),
                comment: comment.map(str::to_owned),
                service: with.cloned(),
            },
        );
        let access = super::referral::organisations(s.conn, &body)?;
        let id = s.ensure_as(
            "ServiceRequest",
            sr::UBRN_SYSTEM,
            ubrn,
            body.clone(),
            Some(format!("r.{}", crate::fhir::new_id())),
            &access,
        )?;
        first.get_or_insert(id.clone());
        made.push(Seeded {
            ubrn: ubrn.to_owned(),
            id,
            body,
            service: with
                .or(shortlist.first().copied())
                .cloned()
                .unwrap_or_default(),
        });
    }
    Ok(made)
}

/// Referral letters of the sandbox referrals 000000070000 and 000000070001 (attachment ids in
/// the NHS sandbox's legacy form `att-70000-70001`): a small synthetic PDF each, uploaded by the
/// referrer, attached as the referral letter.
fn letters(s: &mut Seeder<'_>, made: &[Seeded], referrer_org: &str) -> Result<(), ServiceError> {
    use crate::fhir::resources::document_reference::ATTACHMENT_TYPE_SYSTEM;
    const ATTACHMENT_SYSTEM: &str = "https://fhir.nhs.uk/Id/ers-attachment";
    for (ubrn, att) in [
        ("000000070000", "att-70000-70001"),
        ("000000070001", "att-70001-70001"),
    ] {
        let Some(r) = made.iter().find(|m| m.ubrn == ubrn) else {
            return Err(ServiceError::Internal(format!(
                "sandbox referral {ubrn} is missing"
            )));
        };
        let pdf = format!(
            "%PDF-1.4\n% Synthetic sandbox referral letter for UBRN {ubrn}\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
        );
        let filename = format!("{ubrn}_referral_letter.pdf");
        if ers_schema::store::binary_meta(s.conn, att)?.is_none() {
            let sha256 = crate::domain::sha256_hex(pdf.as_bytes());
            ers_schema::store::insert_binary(
                s.conn,
                &ers_schema::NewBinary {
                    id: att,
                    content_type: "application/pdf",
                    size: i64::try_from(pdf.len()).unwrap_or_default(),
                    sha256: &sha256,
                    filename: Some(&filename),
                    uploaded_by: "R69",
                    uploaded_at: chrono::Utc::now().naive_utc(),
                    data: pdf.as_bytes(),
                },
            )?;
        }
        let access = super::referral::organisations(s.conn, &r.body)?;
        let doc = s.ensure_as(
            "DocumentReference",
            ATTACHMENT_SYSTEM,
            att,
            json!({
                "resourceType": "DocumentReference",
                "identifier": [{"system": ATTACHMENT_SYSTEM, "value": att}],
                "status": "current",
                "type": {"coding": [{"system": ATTACHMENT_TYPE_SYSTEM, "code": "REFERRER"}]},
                "subject": r.body["subject"],
                "date": "2026-11-02T09:35:00Z",
                "author": [{"reference": format!("Organization/{referrer_org}")}],
                "content": [{"attachment": {"contentType": "application/pdf", "url": format!("Binary/{att}"), "size": pdf.len(), "title": filename}}],
                "context": {"related": [{"reference": format!("ServiceRequest/{}", r.id)}]},
            }),
            None,
            &access,
        )?;
        // The referral lists its letter (once).
        let def = registry::find("ServiceRequest")
            .ok_or_else(|| ServiceError::Internal("ServiceRequest is not registered".into()))?;
        let row = resource::read(s.conn, def, &r.id)?;
        let mut body: Value = super::parse_stored(&row)?;
        let reference = format!("DocumentReference/{doc}");
        if !body.to_string().contains(&reference) {
            let mut info = body["supportingInfo"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            info.push(json!({"reference": reference, "display": "Referral letter"}));
            body["supportingInfo"] = Value::Array(info);
            resource::update(
                s.conn,
                def,
                &r.id,
                body,
                resource::IfMatch {
                    version: Some(row.version_id),
                    required: true,
                },
                &resource::Writer::new(&s.author, &s.audit).visible_to(&access),
            )?;
        }
    }
    Ok(())
}

/// The NHS sandbox appointments 70000-70007, each on its referral: booked (directly and
/// indirectly), deferred, cancelled by either side, did-not-attend, rejected, and cancelled
/// with its referral.
fn appointments(s: &mut Seeder<'_>, made: &[Seeded], booker: &str) -> Result<(), ServiceError> {
    use crate::fhir::resources::appointment as ap;
    use crate::fhir::resources::healthcare_service::PRIORITY_SYSTEM;
    use crate::fhir::resources::service_request as sr;
    const APPOINTMENT_SYSTEM: &str = "https://fhir.nhs.uk/Id/ers-appointment";
    let referral_cancel = "https://fhir.nhs.uk/CodeSystem/eRS-ReferralCancellationReason";
    let day = |d: i64, h: u32| {
        let t = (chrono::Utc::now() + chrono::Duration::days(d))
            .date_naive()
            .and_hms_opt(h, 0, 0)
            .unwrap_or_default();
        (
            crate::fhir::datetime::instant(t),
            crate::fhir::datetime::instant(t + chrono::Duration::minutes(20)),
        )
    };
    // (appointment id, UBRN, status, start/end day offset, reason).
    type Planned = (
        &'static str,
        &'static str,
        &'static str,
        Option<i64>,
        Option<(&'static str, &'static str)>,
    );
    let plan: [Planned; 8] = [
        ("70000", "000000070001", "booked", Some(4), None),
        ("70001", "000000070002", "booked", Some(5), None),
        (
            "70002",
            "000000070003",
            "proposed",
            None,
            Some((ap::REVIEW_REASON_SYSTEM, "NO_SLOTS_AT_SERVICE")),
        ),
        (
            "70003",
            "000000070013",
            "cancelled",
            Some(6),
            Some((ap::CANCELLATION_SYSTEM, "PATIENT_ILL")),
        ),
        (
            "70004",
            "000000070014",
            "cancelled",
            Some(7),
            Some((ap::CANCELLATION_SYSTEM, "CLINIC_CANCELLED")),
        ),
        (
            "70005",
            "000000070015",
            "noshow",
            Some(-2),
            Some((ap::NON_ATTENDANCE_SYSTEM, "PATIENT_FORGOT")),
        ),
        (
            "70006",
            "000000070008",
            "cancelled",
            Some(8),
            Some((ap::CANCELLATION_SYSTEM, "SERVICE_INAPPROPRIATE")),
        ),
        (
            "70007",
            "000000070009",
            "cancelled",
            Some(9),
            Some((referral_cancel, "TREATMENT_NO_LONGER_REQUIRED")),
        ),
    ];
    for (appt_id, ubrn, status, when, reason) in plan {
        let Some(r) = made.iter().find(|m| m.ubrn == ubrn) else {
            return Err(ServiceError::Internal(format!(
                "sandbox referral {ubrn} is missing"
            )));
        };
        let mut a = json!({
            "resourceType": "Appointment",
            "identifier": [{"system": APPOINTMENT_SYSTEM, "value": appt_id}],
            "extension": [{"url": ap::BOOKING_ORGANIZATION_EXTENSION, "valueReference": {"reference": format!("Organization/{booker}")}}],
            "status": status,
            "description": "e-Referral Appointment",
            "basedOn": [{"reference": format!("ServiceRequest/{}", r.id)}],
            "created": "2026-11-02T10:00:00Z",
            "participant": [
                ap::participant(r.body.at("/subject/reference").and_then(Value::as_str).unwrap_or_default(), None),
                ap::participant(&r.service, None),
            ],
        });
        if let Some(d) = when {
            let (start, end) = day(d, 14);
            a["start"] = json!(start);
            a["end"] = json!(end);
        }
        match (status, reason) {
            ("proposed", Some((system, code))) => {
                a["reasonCode"] = json!([{"coding": [{"system": system, "code": code}]}]);
            }
            (_, Some((system, code))) => {
                a["cancelationReason"] = json!({"coding": [{"system": system, "code": code}]});
            }
            _ => {}
        }
        // The directly booked one holds a busy slot of its service.
        if appt_id == "70000" {
            let schedule = find(
                s,
                "Schedule",
                "https://fhir.nhs.uk/Id/ers-schedule",
                "11000-schedule",
            )?
            .ok_or_else(|| ServiceError::Internal("sandbox schedule 11000 is missing".into()))?;
            let (start, end) = day(4, 14);
            let priority = sr::ers_priority(&r.body).unwrap_or("ROUTINE").to_owned();
            let slot = s.ensure(
                "Slot",
                "https://fhir.nhs.uk/Id/alternative-slot",
                "11000-70000",
                json!({
                    "resourceType": "Slot",
                    "identifier": [{"system": "https://fhir.nhs.uk/Id/alternative-slot", "value": "11000-70000"}],
                    "schedule": {"reference": format!("Schedule/{schedule}")},
                    "status": "busy",
                    "start": start,
                    "end": end,
                    "appointmentType": {"coding": [{"system": PRIORITY_SYSTEM, "code": priority}]},
                }),
            )?;
            a["slot"] = json!([{"reference": format!("Slot/{slot}")}]);
        }
        let access = super::referral::organisations(s.conn, &r.body)?;
        s.ensure_as(
            "Appointment",
            APPOINTMENT_SYSTEM,
            appt_id,
            a,
            Some(appt_id.to_owned()),
            &access,
        )?;
    }
    Ok(())
}

/// Advice and guidance requests from the sandbox referrer (R69) to an RCD advice service, one
/// in each status, each reached through the A&G use cases as a user would. Seeded once: a
/// restart that finds any A&G request adds none.
fn advice(s: &mut Seeder<'_>, requester: &str, patient: &str) -> Result<(), ServiceError> {
    use super::advice::{self as svc, AdviceChange, Said};
    use crate::domain::advice::GuidanceOutcome;
    use crate::fhir::resources::advice as ag;
    use crate::fhir::resources::service_request as sr;
    let search = |s: &mut Seeder<'_>, res_type: &str, params: &[(&str, &str)]| {
        let def = registry::find(res_type)
            .ok_or_else(|| ServiceError::BadRequest(format!("{res_type} is not hosted")))?;
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let req = search::parse(def, &params, true).map_err(ServiceError::Invalid)?;
        let (rows, _) = ers_schema::search::search(s.conn, &req.query, false)?;
        Ok::<_, ServiceError>(rows.into_iter().next().map(|r| r.id))
    };
    /// How many requests the plan below creates.
    const SEEDED: usize = 6;
    let category = format!("{}|{}", ag::CATEGORY_SYSTEM, ag::CATEGORY);
    if search(s, "ServiceRequest", &[("category", &category)])?.is_some() {
        s.report.existing += SEEDED;
        return Ok(());
    }
    let rcd = format!("{}|RCD", OdsCode::ORGANIZATION_SYSTEM);
    let service = |s: &mut Seeder<'_>, flow: &str| {
        search(
            s,
            "HealthcareService",
            &[
                ("characteristic", flow),
                ("priority", "ROUTINE"),
                ("organization.identifier", &rcd),
                ("_sort", "_id"),
            ],
        )?
        .ok_or_else(|| ServiceError::Internal(format!("the sandbox has no {flow} service at RCD")))
    };
    let advice_service = service(s, "ADVICE_AND_GUIDANCE")?;
    let bookable = service(s, "BOOKABLE")?;
    let caller = |sds: &str, bf: BusinessFunction, ods: &str| -> Result<Caller, ServiceError> {
        Ok(Caller {
            user_id: Some(sds.to_owned()),
            client_id: None,
            business_function: bf,
            organisation: OdsCode::parse(ods)
                .map_err(|e| ServiceError::Internal(format!("sandbox ODS code: {}", e.0)))?,
            on_behalf_of: None,
        })
    };
    let rc = caller("021600556514", BusinessFunction::ReferringClinician, "R69")?;
    let spc = caller(
        "555032006106",
        BusinessFunction::ServiceProviderClinician,
        "RCD",
    )?;
    let said = |text: &str| Said {
        text: text.to_owned(),
        attachments: Vec::new(),
    };
    let advice_with = |outcome| AdviceChange::Respond {
        outcome,
        recommendation: (outcome == GuidanceOutcome::ReturnToReferrerWithAdvice)
            .then(|| "ADVICE_ONLY_NO_REFERRAL_RECOMMENDED".to_owned()),
        said: said(match outcome {
            GuidanceOutcome::RequireFurtherInformation => {
                "Please send a recent full blood count and ferritin."
            }
            GuidanceOutcome::ReturnToReferrerWithAdvice => {
                "Start oral iron and repeat bloods in 8 weeks; no referral needed now."
            }
        }),
    };
    // (first message, conversion authorised, the steps: provider's or referrer's change)
    // A step: whether the provider takes it, and the change.
    type Step = (bool, AdviceChange);
    let plan: Vec<(&str, bool, Vec<Step>)> = vec![
        (
            "Sandbox A&G awaiting the provider: intermittent palpitations, normal ECG.",
            true,
            vec![],
        ),
        (
            "Sandbox A&G, further information asked for: microcytic anaemia.",
            true,
            vec![(
                true,
                advice_with(GuidanceOutcome::RequireFurtherInformation),
            )],
        ),
        (
            "Sandbox A&G with advice to review: mild iron deficiency.",
            false,
            vec![(
                true,
                advice_with(GuidanceOutcome::ReturnToReferrerWithAdvice),
            )],
        ),
        (
            "Sandbox A&G cancelled by the referrer.",
            true,
            vec![(
                false,
                AdviceChange::Cancel(Some("Patient seen privately.".into())),
            )],
        ),
        (
            "Sandbox A&G closed after advice: borderline thyroid function.",
            false,
            vec![
                (
                    true,
                    advice_with(GuidanceOutcome::ReturnToReferrerWithAdvice),
                ),
                (
                    false,
                    AdviceChange::Close(Some("Thank you, advice followed.".into())),
                ),
            ],
        ),
        (
            "Sandbox A&G converted into a referral: rectal bleeding over 50.",
            true,
            vec![(
                true,
                AdviceChange::Convert {
                    said: said("Converted: we will see the patient in clinic."),
                    priority: "ROUTINE".into(),
                    comment: "Needs assessment in clinic".into(),
                    service: Some(format!("HealthcareService/{bookable}")),
                },
            )],
        ),
    ];
    if plan.len() != SEEDED {
        return Err(ServiceError::Internal(format!(
            "the A&G seed plans {} requests, not {SEEDED}",
            plan.len()
        )));
    }
    for (text, authorised, steps) in plan {
        let body = json!({
            "resourceType": "ServiceRequest",
            "extension": [
                {"url": sr::PRIORITY_EXTENSION, "valueCoding": {"system": "https://fhir.nhs.uk/CodeSystem/eRS-Priority", "code": "ROUTINE"}},
                {"url": ag::CONVERSION_EXTENSION, "valueCoding": {"system": ag::CONVERSION_SYSTEM, "code": if authorised { "AUTHORISED_TO_CONVERT" } else { "NOT_AUTHORISED_TO_CONVERT" }}},
            ],
            "status": "active",
            "intent": "order",
            "category": [{"coding": [{"system": ag::CATEGORY_SYSTEM, "code": ag::CATEGORY}]}],
            "subject": {"reference": format!("Patient/{patient}")},
            "requester": {"reference": format!("PractitionerRole/{requester}")},
            "performer": [{"reference": format!("HealthcareService/{advice_service}")}],
            "note": [{"text": text}],
        });
        let acting = |caller| super::referral::Acting {
            caller,
            author: &s.author,
            audit: &s.audit,
        };
        let row = svc::create(s.conn, body, &acting(&rc))?;
        let mut version = row.version_id;
        for (provider, change) in steps {
            let done = svc::apply(
                s.conn,
                &row.id,
                Some(version),
                change,
                &acting(if provider { &spc } else { &rc }),
            )?;
            version = done.request.version_id;
        }
        s.report.created += 1;
    }
    Ok(())
}
