#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| iarnet::fuzz::gossip_messages(data));
