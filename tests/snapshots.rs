//! Snapshots of `laxc check` (table and JSON) for every shipped spec, and of the diagnostics for
//! every invalid spec. Snapshots are for review; the numbers are proven in paper_counts.rs.

mod common;
use common::*;

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

fn check_specs_in(dir: &str) {
    let files = lax_files(dir);
    assert!(!files.is_empty(), "no specs in {dir}");
    for path in files {
        let src = source(&path);
        let compiled = laxc::compile(&src).unwrap_or_else(|d| {
            panic!(
                "{} does not compile:\n{}",
                src.name,
                laxc::diagnostic::render_to_string(&src, &d)
            )
        });
        let report = compiled.report();
        let name = stem(&path);
        settings().bind(|| {
            insta::assert_snapshot!(
                format!("check-{name}"),
                laxc::report::render_table(&report, compiled.warnings.len())
            );
            insta::assert_json_snapshot!(format!("json-{name}"), report);
        });
    }
}

#[test]
fn example_specs() {
    check_specs_in("specs");
}

#[test]
fn paper_specs() {
    check_specs_in("specs/paper");
}

#[test]
fn bench_specs() {
    check_specs_in("specs/bench");
}

#[test]
fn claims_specs() {
    check_specs_in("specs/claims");
}

#[test]
fn gpt2_specs() {
    check_specs_in("specs/gpt2");
    check_specs_in("specs/pretrained");
}

/// `# expect: CODE` on a spec's first line.
fn expected_code(text: &str) -> String {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect:"))
        .map(|c| c.trim().to_string())
        .expect("invalid specs start with `# expect: CODE`")
}

#[test]
fn invalid_specs_report_the_expected_error() {
    let files = lax_files("tests/invalid");
    assert!(files.len() >= 25, "only {} invalid specs", files.len());
    let mut codes = std::collections::BTreeSet::new();
    for path in files {
        let src = source(&path);
        let code = expected_code(&src.text);
        let diags = match laxc::compile(&src) {
            Ok(_) => panic!("{} compiled, but it should fail with {code}", src.name),
            Err(d) => d,
        };
        let rendered = laxc::diagnostic::render_to_string(&src, &diags);
        assert!(
            diags.iter().any(|d| d.code == code && d.is_error()),
            "{}: expected {code}, got:\n{rendered}",
            src.name
        );
        for d in &diags {
            assert!(
                d.span.end <= src.text.len(),
                "{}: span out of the file",
                src.name
            );
            assert!(
                !d.message.contains("Rule::"),
                "pest rule names leaked: {}",
                d.message
            );
        }
        // Every diagnostic names the file, a line and a column.
        assert!(rendered.contains(&format!("{}:", src.name)), "{rendered}");
        codes.insert(code);
        let name = stem(&path);
        settings().bind(|| insta::assert_snapshot!(format!("diag-{name}"), rendered));
    }
    // Every check of the checker has an invalid spec that triggers it.
    for code in [
        "E0001", "E0102", "E0104", "E0201", "E0202", "E0203", "E0204", "E0205", "E0207", "E0208",
        "E0301", "E0302", "E0303", "E0401", "E0402", "E0403", "E0405", "E0406", "E0501", "E0502",
        "E0503", "E0504", "E0505", "E0506", "E0507", "E0508", "E0601", "E0602", "E0603", "E0701",
        "E0702", "E0703", "E0704", "E0705", "E0706", "E0707", "E0708",
    ] {
        assert!(codes.contains(code), "no invalid spec covers {code}");
    }
}

#[test]
fn lint_specs_warn_but_compile() {
    for path in lax_files("tests/lint") {
        let src = source(&path);
        let code = expected_code(&src.text);
        let compiled = laxc::compile(&src).unwrap_or_else(|d| {
            panic!(
                "{}:\n{}",
                src.name,
                laxc::diagnostic::render_to_string(&src, &d)
            )
        });
        assert!(
            compiled.warnings.iter().any(|w| w.code == code),
            "{}: expected warning {code}",
            src.name
        );
        let rendered = laxc::diagnostic::render_to_string(&src, &compiled.warnings);
        let name = stem(&path);
        settings().bind(|| insta::assert_snapshot!(format!("lint-{name}"), rendered));
    }
}
