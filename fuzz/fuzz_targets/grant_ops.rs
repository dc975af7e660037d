#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pvio_fuzz::grant_ops::run(data));
