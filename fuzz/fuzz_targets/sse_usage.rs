#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| semantic_router::fuzz::sse_usage(data));
