//! Times each verification the `attenuation_block` target makes for one input file:
//! `cargo run -p fuzz-targets --example attenuation_timing -- FILE...`.

fn main() {
    for path in std::env::args().skip(1) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        println!("{path}");
        let Some(timings) = fuzz_targets::attenuation_timings(&data) else {
            println!("  not a block that parses and appends");
            continue;
        };
        for t in timings {
            println!(
                "  {:>10.1?}  {:<7}  {:<60}  {}",
                t.elapsed, t.base, t.request, t.verdict
            );
        }
    }
}
