//! Diesel table definitions. Kept by hand in step with `migrations/{sqlite,postgres}`, which are
//! identical in shape; only portable SQL types are used (Text, BigInt, Integer, Timestamp).

diesel::table! {
    resources (res_type, id) {
        res_type -> Text,
        id -> Text,
        version_id -> BigInt,
        last_updated -> Timestamp,
        deleted -> Integer,
        content -> Text,
    }
}

diesel::table! {
    resource_versions (res_type, id, version_id) {
        res_type -> Text,
        id -> Text,
        version_id -> BigInt,
        last_updated -> Timestamp,
        method -> Text,
        deleted -> Integer,
        content -> Text,
        author_user -> Nullable<Text>,
        author_role -> Text,
        author_org -> Text,
        request_id -> Text,
        client_id -> Nullable<Text>,
        on_behalf_of -> Nullable<Text>,
    }
}

diesel::table! {
    search_tokens (res_type, res_id, param, system, code) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        system -> Text,
        code -> Text,
    }
}

diesel::table! {
    search_strings (res_type, res_id, param, value_exact) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        value_norm -> Text,
        value_exact -> Text,
    }
}

diesel::table! {
    search_dates (res_type, res_id, param, low, high) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        low -> Timestamp,
        high -> Timestamp,
    }
}

diesel::table! {
    search_refs (res_type, res_id, param, target_type, target_id) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        target_type -> Text,
        target_id -> Text,
    }
}

diesel::table! {
    unique_identifiers (res_type, system, value) {
        res_type -> Text,
        system -> Text,
        value -> Text,
        res_id -> Text,
    }
}

diesel::table! {
    write_lock (id) {
        id -> Integer,
        counter -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    resources,
    resource_versions,
    search_tokens,
    search_strings,
    search_dates,
    search_refs,
    unique_identifiers,
    write_lock,
);

diesel::table! {
    audit_events (id) {
        id -> Text,
        recorded -> Timestamp,
        action -> Text,
        subtype -> Text,
        outcome -> Text,
        outcome_desc -> Nullable<Text>,
        user_id -> Nullable<Text>,
        client_id -> Nullable<Text>,
        role -> Nullable<Text>,
        org -> Nullable<Text>,
        on_behalf_of -> Nullable<Text>,
        method -> Text,
        path -> Text,
        query -> Nullable<Text>,
        status -> Integer,
        source_address -> Nullable<Text>,
        request_id -> Text,
        correlation_id -> Nullable<Text>,
    }
}

diesel::table! {
    audit_entities (audit_id, position) {
        audit_id -> Text,
        position -> Integer,
        entity_type -> Text,
        entity_id -> Text,
        nhs_number -> Nullable<Text>,
        ubrn -> Nullable<Text>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(audit_events, audit_entities);

diesel::table! {
    search_geo (res_type, res_id, param) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        latitude -> Double,
        longitude -> Double,
    }
}

diesel::table! {
    postcodes (code) {
        code -> Text,
        latitude -> Double,
        longitude -> Double,
    }
}

diesel::allow_tables_to_appear_in_same_query!(resources, search_geo);

diesel::table! {
    /// Each service's locations' positions by specialty coding (see the migration).
    directory_positions (service_id, location_id, system, code) {
        service_id -> Text,
        location_id -> Text,
        system -> Text,
        code -> Text,
        latitude -> Double,
        longitude -> Double,
        active -> Integer,
        priorities -> Integer,
    }
}

diesel::table! {
    counters (name) {
        name -> Text,
        value -> BigInt,
    }
}

diesel::table! {
    used_assertions (client_id, jti) {
        client_id -> Text,
        jti -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    idempotency_keys (owner, key) {
        owner -> Text,
        key -> Text,
        fingerprint -> Text,
        request_id -> Text,
        created_at -> Timestamp,
        status -> Nullable<Integer>,
        headers -> Nullable<Text>,
        body -> Nullable<Binary>,
        written -> Nullable<Text>,
    }
}

diesel::table! {
    binaries (id) {
        id -> Text,
        content_type -> Text,
        size -> BigInt,
        sha256 -> Text,
        filename -> Nullable<Text>,
        uploaded_by -> Text,
        uploaded_at -> Timestamp,
        data -> Binary,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        seq -> Nullable<BigInt>,
        res_type -> Text,
        res_id -> Text,
        version_id -> BigInt,
        method -> Text,
        occurred -> Timestamp,
    }
}

diesel::table! {
    subscription_state (id) {
        id -> Text,
        owner_org -> Text,
        owner_role -> Text,
        cursor -> BigInt,
        events_sent -> BigInt,
        failures -> Integer,
        next_attempt -> Timestamp,
        lease_until -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
        last_error -> Nullable<Text>,
        last_sent -> Timestamp,
        headers -> Text,
        handshake -> Integer,
        heartbeat -> Nullable<BigInt>,
    }
}

diesel::table! {
    announcement_reads (id, reader) {
        id -> Text,
        reader -> Text,
        read_at -> Timestamp,
    }
}

diesel::table! {
    report_referrals (id) {
        id -> Text,
        kind -> Text,
        ubrn -> Text,
        state -> Text,
        active -> Integer,
        priority -> Text,
        specialty -> Text,
        clinic_type -> Nullable<Text>,
        referrer_org -> Nullable<Text>,
        provider_org -> Nullable<Text>,
        service_id -> Nullable<Text>,
        patient_id -> Nullable<Text>,
        created -> Timestamp,
        updated -> Timestamp,
        week -> Text,
        converted -> Integer,
        deleted -> Integer,
    }
}

diesel::table! {
    report_appointments (id) {
        id -> Text,
        referral_id -> Nullable<Text>,
        service_id -> Nullable<Text>,
        provider_org -> Nullable<Text>,
        referrer_org -> Nullable<Text>,
        specialty -> Text,
        priority -> Text,
        status -> Text,
        booked -> Integer,
        start -> Nullable<Timestamp>,
        created -> Timestamp,
        week -> Text,
        deleted -> Integer,
    }
}

diesel::table! {
    report_slots (id) {
        id -> Text,
        service_id -> Text,
        provider_org -> Nullable<Text>,
        specialty -> Nullable<Text>,
        priority -> Text,
        status -> Text,
        start -> Timestamp,
        week -> Text,
        deleted -> Integer,
        schedule_id -> Text,
        live -> Integer,
        search_priority -> Nullable<Text>,
        start_high -> Nullable<Timestamp>,
    }
}

diesel::table! {
    export_jobs (id) {
        id -> Text,
        owner -> Text,
        owner_org -> Text,
        owner_role -> Text,
        request -> Text,
        level -> Text,
        types -> Text,
        since -> Nullable<Timestamp>,
        status -> Text,
        position -> Text,
        exported -> BigInt,
        error -> Nullable<Text>,
        transaction_time -> Timestamp,
        created -> Timestamp,
        completed -> Nullable<Timestamp>,
        expires -> Timestamp,
        lease_until -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
    }
}

diesel::table! {
    export_files (job_id, part) {
        job_id -> Text,
        part -> Integer,
        res_type -> Text,
        count -> BigInt,
        data -> Binary,
        encoding -> Text,
    }
}

diesel::table! {
    worklist_entries (list, org, authored, referral_id) {
        list -> Text,
        org -> Text,
        authored -> Timestamp,
        referral_id -> Text,
        service_id -> Nullable<Text>,
        specialty -> Text,
    }
}
