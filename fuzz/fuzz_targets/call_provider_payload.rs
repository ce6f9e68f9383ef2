#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iarnet::fuzz::call_provider_payload(data));
