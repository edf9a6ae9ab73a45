//! Replays the fuzz corpus (`fuzz/corpus/parsers/`) and the crashes it found
//! (`fuzz/regressions/`) through the same code the fuzz target runs: what once broke
//! a parser stays a test.

#[path = "fuzz_input.rs"]
mod fuzz_input;

#[test]
fn every_saved_fuzz_input_parses_without_a_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut n = 0;
    for sub in ["corpus/parsers", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        for entry in dir {
            let path = entry.unwrap().path();
            fuzz_input::exercise(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no saved fuzz inputs found under {}", root.display());
}
