//! `laxc check --set NAME=VALUE`: a spec with some of its values replaced, to try another rank or
//! size without editing the file. The value is spliced into the text where NAME is written (a
//! `let` constant, a model size, a train key), or added to its block when the spec leaves it at
//! its default, so every later diagnostic points into text the user can see.

use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::family::Family;
use crate::options::OverrideError;
use crate::source::{Source, Span};
use crate::syntax::ast::{self, Item};

/// The spec with every `NAME=VALUE` of `sets` applied in order; later ones win.
pub fn apply(source: &Source, sets: &[String]) -> Result<Source, OverrideError> {
    let mut text = source.text.clone();
    for set in sets {
        let (name, value) = split(set)?;
        let file = crate::syntax::parse(&text).map_err(|d| OverrideError {
            source: Source::new(source.name.clone(), text.clone()),
            diagnostic: d,
        })?;
        let place = place(&file, name).map_err(|d| OverrideError {
            source: Source::new("--set", set.clone()),
            diagnostic: d,
        })?;
        match place {
            Place::Replace(at) => text.replace_range(at.start..at.end, value),
            Place::Insert(at) => text.insert_str(at, &format!(" {name} = {value} ")),
            Place::NewTrainSection => {
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!("train {{ {name} = {value} }}\n"));
            }
        }
    }
    Ok(Source::new(source.name.clone(), text))
}

/// `NAME=VALUE`, checked: a name, and a value that parses on its own.
fn split(set: &str) -> Result<(&str, &str), OverrideError> {
    let refuse = |d: Diagnostic| OverrideError {
        source: Source::new("--set", set.to_string()),
        diagnostic: d,
    };
    let example = "e.g. `--set r=32 --set hidden=512 --set batch=16`";
    let (name, value, offset) =
        crate::syntax::split_assignment(set, "name", example).map_err(refuse)?;
    crate::syntax::parse_value_at(value, offset).map_err(refuse)?;
    Ok((name, value.trim()))
}

/// Where a `--set` goes in the spec's text.
enum Place {
    /// Over the value written for the name.
    Replace(Span),
    /// A new `name = value` entry at this offset, inside its block.
    Insert(usize),
    /// A new train section at the end of the spec.
    NewTrainSection,
}

/// Where NAME's value goes: a `let`, a model size, a train key, in that order.
fn place(file: &ast::File, name: &str) -> Result<Place, Diagnostic> {
    let written = |entries: &[ast::Entry]| {
        entries
            .iter()
            .rev()
            .find(|e| e.key.name == name)
            .map(|e| Place::Replace(e.value.span()))
    };
    let mut model = None;
    let mut train = None;
    for item in &file.items {
        match item {
            Item::Let(l) if l.name.name == name => return Ok(Place::Replace(l.value.span())),
            Item::Model(m) => model = Some(m),
            Item::Train(t) => train = Some(t),
            _ => {}
        }
    }
    let family = model.and_then(|m| Family::from_name(&m.family.name));
    if let Some(m) = model {
        if let Some(p) = written(&m.entries) {
            return Ok(p);
        }
        if family.is_some_and(|f| f.keys().iter().any(|k| k.name == name)) {
            return Ok(Place::Insert(inside_closing_brace(m.span)));
        }
    }
    if crate::options::keys().any(|k| k == name) {
        return Ok(match train {
            Some(t) => written(&t.entries).unwrap_or(Place::Insert(inside_closing_brace(t.span))),
            None => Place::NewTrainSection,
        });
    }
    Err(unknown(file, family, name))
}

/// Just inside a block's closing `}`.
fn inside_closing_brace(block: Span) -> usize {
    block.end - 1
}

fn unknown(file: &ast::File, family: Option<Family>, name: &str) -> Diagnostic {
    let mut names: Vec<&str> = file
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Let(l) => Some(l.name.name.as_str()),
            _ => None,
        })
        .collect();
    let model_keys = family.map(|f| f.keys()).unwrap_or_default();
    // Pushed one by one: `extend` would ask the spec's names to be 'static too.
    for k in model_keys
        .iter()
        .map(|k| k.name)
        .chain(crate::options::keys())
    {
        names.push(k);
    }
    let mut d = Diagnostic::error(
        "E0102",
        format!("`{name}` is not a constant, model size or train key of this spec"),
        Span::new(0, name.len()),
    )
    .with_label("unknown name");
    d = match did_you_mean(name, names.iter().copied()) {
        Some(s) => d.with_hint(format!("did you mean `{s}`?")),
        None => d.with_hint(format!("names this spec knows: {}", names.join(", "))),
    };
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = "model m: llama {\n    vocab = 256, hidden = 64, ffn = 128\n    heads = 4, layers = 2, seq = 16\n}\nlet r = hidden / 4\nfactorize attn.* as svd(rank = r)\ntrain { steps = 10, batch = 2 }\n";

    fn set(sets: &[&str]) -> Result<String, String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        apply(&Source::new("m.lax", SPEC), &sets)
            .map(|s| s.text)
            .map_err(|r| format!("{}: {}", r.diagnostic.code, r.diagnostic.message))
    }

    #[test]
    fn a_constant_a_size_and_a_train_key_are_replaced_where_written() {
        let t = set(&["r=8", "hidden=128", "batch=16"]).unwrap();
        assert!(t.contains("let r = 8\n"), "{t}");
        assert!(t.contains("hidden = 128,"), "{t}");
        assert!(t.contains("batch = 16 }"), "{t}");
        // Lines keep their numbers: diagnostics still point at the line the user wrote.
        assert_eq!(t.lines().count(), SPEC.lines().count());
    }

    #[test]
    fn a_size_or_key_left_at_its_default_is_added_to_its_block() {
        let t = set(&["lr=1e-3"]).unwrap();
        assert!(t.contains("batch = 2  lr = 1e-3 }"), "{t}");
        let vit = "model v: vit { image = 28, patch = 7, classes = 10, hidden = 32, mlp = 64, heads = 2, layers = 1 }\n";
        let sets = ["channels=1".to_string(), "steps=5".to_string()];
        let t = apply(&Source::new("v.lax", vit), &sets).unwrap().text;
        assert!(
            t.contains("layers = 1  channels = 1 }\ntrain { steps = 5 }\n"),
            "{t}"
        );
    }

    #[test]
    fn later_sets_win() {
        let t = set(&["r=8", "r=2"]).unwrap();
        assert!(t.contains("let r = 2\n"), "{t}");
    }

    #[test]
    fn unknown_names_and_malformed_sets_are_refused() {
        assert_eq!(
            set(&["hiden=8"]).unwrap_err(),
            "E0102: `hiden` is not a constant, model size or train key of this spec"
        );
        assert!(set(&["r"]).unwrap_err().starts_with("E0607"));
        assert!(set(&["r=(8"]).unwrap_err().starts_with("E0001"));
    }
}
