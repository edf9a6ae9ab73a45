// Everything that parses outside input, fed arbitrary bytes. Shared by the fuzz
// target (`fuzz/fuzz_targets/parsers.rs` includes this file) and by `cargo test`,
// which replays the saved corpus (`fuzz/corpus/parsers/`) through it. The first byte
// chooses the parser; the rest is the input. Nothing may panic; whatever is accepted
// must be usable.

/// Feeds `data` to one of the parsers.
pub fn exercise(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 7 {
        // `spool track --props JSON`
        0 => {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Ok(event) = eventspool::Event::new("fuzz").properties(value) {
                    let _ = event.name();
                }
            }
        }
        // `spool track -p key=value`
        1 => {
            if let Ok((key, _)) = eventspool::cli::parse_property_arg(&text) {
                assert!(!key.is_empty());
            }
        }
        // Limit variables, all of them at once.
        2 => {
            let _ = eventspool::Limits::default().with_env(|_| Some(text.to_string()));
            let _ = eventspool::fuzzing::parse_size("X", &text);
            let _ = eventspool::fuzzing::parse_duration("X", &text);
            let _ = eventspool::fuzzing::parse_count("X", &text);
        }
        // `Retry-After`
        3 => {
            let now =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
            let _ = eventspool::fuzzing::parse_retry_after(&text, now);
            let _ = eventspool::fuzzing::classify(429, Some(&text), now);
        }
        // `config.json`
        4 => {
            if let Ok(settings) = eventspool::Settings::parse(&text) {
                let again = serde_json::to_string(&settings).expect("settings serialize");
                eventspool::Settings::parse(&again).expect("settings round-trip");
            }
        }
        // Property strings through the scrubber.
        5 => {
            let s = eventspool::fuzzing::Scrubber::new(Some("/home/fuzz"), Some("fuzzer"));
            let _ = s.scrub(&text);
            // Keys too, nested ones included.
            if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&text) {
                s.scrub_value("", &mut value);
            }
        }
        // Endpoints and event names.
        _ => {
            let _ = eventspool::fuzzing::check_endpoint(&text);
            let _ = eventspool::fuzzing::validate_name(&text);
        }
    }
}
