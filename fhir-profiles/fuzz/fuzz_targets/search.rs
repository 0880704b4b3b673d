#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ers_api::fhir::search::fuzz_query(data));
