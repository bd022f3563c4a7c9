#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tokenvault::fuzzing::keyring_file(data);
});
