#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvio_fuzz::ring_back::run(data));
