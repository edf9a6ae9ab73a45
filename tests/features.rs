//! Cargo features: a host that builds with `default-features = false` pulls in no CLI
//! and no HTTP server, read from cargo's own resolution of this manifest.

use std::collections::BTreeMap;
use std::process::Command;

/// Every normal (non-dev, non-build) dependency of eventspool with the given cargo
/// flags, as crate name → the features enabled on it (unioned over versions).
fn normal_deps(flags: &[&str]) -> BTreeMap<String, Vec<String>> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--manifest-path", manifest, "-e", "normal"])
        .args(["--prefix", "none", "--format", "{p} {f}"])
        .args(flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let mut words = line.split_whitespace();
        let Some(name) = words.next() else { continue };
        let _version = words.next();
        let features: Vec<String> = words
            .next()
            .filter(|f| !f.starts_with('('))
            .map(|f| f.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        deps.entry(name.to_string()).or_default().extend(features);
    }
    deps
}

#[test]
fn lean_build_pulls_no_cli_or_server_crates() {
    let lean = normal_deps(&["--no-default-features"]);
    // Flushing still needs its HTTP client, the queue its SQLite.
    for needed in ["reqwest", "rusqlite", "tokio", "eventspool"] {
        assert!(lean.contains_key(needed), "{needed} missing: {lean:?}");
    }
    for cli_only in ["clap", "anyhow", "indicatif"] {
        assert!(!lean.contains_key(cli_only), "{cli_only} in the lean build");
    }
    // reqwest's client brings hyper; the server half must stay out.
    let hyper = lean.get("hyper").cloned().unwrap_or_default();
    assert!(
        !hyper.iter().any(|f| f == "server"),
        "hyper server in the lean build: {hyper:?}"
    );
    // Nor the runtime pieces only `spool serve` uses.
    let tokio = &lean["tokio"];
    for serve_only in ["rt-multi-thread", "signal"] {
        assert!(
            !tokio.iter().any(|f| f == serve_only),
            "tokio {serve_only} in the lean build: {tokio:?}"
        );
    }
}

#[test]
fn default_build_has_the_cli_and_the_server() {
    // The same reading of the default build finds them: the lean test is not
    // passing because the listing came out empty or in another shape.
    let full = normal_deps(&[]);
    for cli in ["clap", "anyhow", "indicatif"] {
        assert!(full.contains_key(cli), "{cli} missing: {full:?}");
    }
    assert!(full["hyper"].iter().any(|f| f == "server"));
}

#[test]
fn otlp_is_encoded_with_prost_alone_not_the_opentelemetry_crates() {
    // The OTLP messages and their encoding are written by hand over prost's wire
    // functions: opentelemetry-proto (and the SDK it pulls in) is only a
    // dev-dependency that decodes our bodies in tests, and prost's derive (a second
    // syn, anyhow, itertools) stays out of every host's build.
    for flags in [&[][..], &["--no-default-features"][..]] {
        let deps = normal_deps(flags);
        assert!(deps.contains_key("prost"), "{flags:?}: {deps:?}");
        let otel: Vec<&String> = deps
            .keys()
            .filter(|k| {
                k.starts_with("opentelemetry") || k.starts_with("tonic") || *k == "prost-derive"
            })
            .collect();
        assert!(otel.is_empty(), "{flags:?}: {otel:?}");
    }
}
