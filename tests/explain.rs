//! `laxc explain`: every code of the registry has a page, and every page's examples do what the
//! page says: the wrong spec reports the code, the right one checks clean of it.

mod common;

use laxc::diagnostic::CODES;
use laxc::source::Source;
use std::process::Command;

/// The code blocks of one section (`## Wrong` or `## Right`) of a page, with their language.
fn blocks<'a>(page: &'a str, section: &str) -> Vec<(&'a str, &'a str)> {
    let Some(rest) = page.split(&format!("\n## {section}\n")).nth(1) else {
        return Vec::new();
    };
    let section_text = rest.split("\n## ").next().unwrap();
    section_text
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|b| b.split_once('\n').unwrap_or((b, "")))
        .collect()
}

fn codes_of(text: &str) -> Result<Vec<&'static str>, Vec<&'static str>> {
    match laxc::compile(&Source::new("example.lax", text)) {
        Ok(c) => Ok(c.warnings.iter().map(|d| d.code).collect()),
        Err(d) => Err(d.iter().map(|d| d.code).collect()),
    }
}

/// A `$ laxc ...` line of a console example, run; its exit code and standard error.
fn run_console(block: &str) -> Vec<(Option<i32>, String)> {
    let dir = std::env::temp_dir().join(format!("laxc-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    block
        .lines()
        .filter_map(|l| l.strip_prefix("$ laxc "))
        // A front-end-only build has no `train`.
        .filter(|args| cfg!(feature = "train") || !args.starts_with("train"))
        .map(|args| {
            let out = Command::new(env!("CARGO_BIN_EXE_laxc"))
                .args(args.split_whitespace())
                .current_dir(&dir)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect()
}

#[test]
fn every_page_starts_with_its_code_and_meaning() {
    for c in CODES {
        let title = format!("# {}: {}\n", c.code, c.meaning);
        assert!(
            c.page.starts_with(&title),
            "docs/codes/{}.md must start with `{title}`",
            c.code
        );
    }
}

#[test]
fn every_wrong_example_reports_its_code_and_every_right_one_fixes_it() {
    let mut shown = 0;
    for c in CODES {
        let (wrong, right) = (blocks(c.page, "Wrong"), blocks(c.page, "Right"));
        if c.code == "E0900" {
            // An internal inconsistency: no spec can show it; the page says to report it.
            assert!(wrong.is_empty() && c.page.contains("bug"), "E0900's page");
            continue;
        }
        assert!(
            !wrong.is_empty() && !right.is_empty(),
            "docs/codes/{}.md needs a Wrong and a Right example",
            c.code
        );
        for (lang, text) in wrong {
            match lang {
                "lax" => {
                    let found = match codes_of(text) {
                        Ok(w) | Err(w) => w,
                    };
                    assert!(
                        found.contains(&c.code),
                        "{}: the wrong example reports {found:?}",
                        c.code
                    );
                }
                "console" => {
                    for (status, err) in run_console(text) {
                        assert_ne!(status, Some(0), "{}: {err}", c.code);
                        assert!(err.contains(c.code), "{}: {err}", c.code);
                    }
                }
                other => panic!("{}: a ```{other} example", c.code),
            }
        }
        for (lang, text) in right {
            match lang {
                "lax" => match codes_of(text) {
                    Ok(warnings) => assert!(
                        !warnings.contains(&c.code),
                        "{}: the right example still warns",
                        c.code
                    ),
                    Err(e) => panic!("{}: the right example has errors {e:?}", c.code),
                },
                "console" => {
                    for (status, err) in run_console(text) {
                        assert_eq!(status, Some(0), "{}: {err}", c.code);
                    }
                }
                other => panic!("{}: a ```{other} example", c.code),
            }
        }
        shown += 1;
    }
    assert_eq!(shown, CODES.len() - 1);
}

#[test]
fn explain_prints_a_page_lists_the_codes_and_refuses_an_unknown_one() {
    let laxc = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_laxc"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = laxc(&["explain", "e0703"]);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with("# E0703: ") && page.contains("## Wrong") && page.contains("## Right")
    );
    let out = laxc(&["explain"]);
    let list = String::from_utf8(out.stdout).unwrap();
    assert_eq!(list.lines().count(), CODES.len());
    let out = laxc(&["explain", "E0730"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("not a laxc diagnostic code") && err.contains("did you mean"),
        "{err}"
    );
}
