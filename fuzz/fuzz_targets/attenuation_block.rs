#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::attenuation_block(data));
