//! `docs/configuration.md` against the config types: every key in both, and nothing else.
//!
//! The doc marks each table with `<!-- keys: GROUP -->`; every row's first column is one
//! backticked dotted path. The code's side comes from `agent_shipper::config::keys`, which
//! walks the serde types, so neither list is maintained by hand.

use agent_shipper::config::{keys, ProcessSettings};
use std::collections::{BTreeMap, BTreeSet};

/// One documented key: its path and the example column's text.
#[derive(Debug, Clone, PartialEq)]
struct DocKey {
    key: String,
    example: String,
}

fn reference_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("cannot read {path}: {err}"))
}

/// The text between backticks when `cell` is exactly one backticked span.
fn backticked(cell: &str) -> Option<&str> {
    let inner = cell.trim().strip_prefix('`')?.strip_suffix('`')?;
    (!inner.is_empty() && !inner.contains('`')).then_some(inner)
}

/// The documented keys by group, or every problem with the doc's tables.
fn parse_reference(text: &str) -> Result<BTreeMap<String, Vec<DocKey>>, String> {
    let mut groups: BTreeMap<String, Vec<DocKey>> = BTreeMap::new();
    let mut group: Option<String> = None;
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("<!-- keys:")
            .and_then(|rest| rest.strip_suffix("-->"))
        {
            let name = name.trim().to_string();
            groups.entry(name.clone()).or_default();
            group = Some(name);
            continue;
        }
        if line.starts_with('#') {
            // A new section: its tables need their own marker.
            group = None;
            continue;
        }
        let Some(row) = line.strip_prefix('|') else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let first = cells.first().copied().unwrap_or_default();
        if first == "key" || first.chars().all(|c| c == '-' || c == ':') {
            continue;
        }
        let line_no = number + 1;
        let Some(key) = backticked(first) else {
            problems.push(format!(
                "line {line_no}: first column `{first}` is not one backticked key"
            ));
            continue;
        };
        let Some(group) = &group else {
            problems.push(format!(
                "line {line_no}: `{key}` is in a table without a `<!-- keys: GROUP -->` marker"
            ));
            continue;
        };
        let example = cells.get(3).copied().unwrap_or_default();
        let example = backticked(example).unwrap_or(example).to_string();
        let entries = groups.entry(group.clone()).or_default();
        if entries.iter().any(|entry| entry.key == key) {
            problems.push(format!(
                "line {line_no}: `{key}` is listed twice in {group}"
            ));
        }
        entries.push(DocKey {
            key: key.to_string(),
            example,
        });
    }
    if problems.is_empty() {
        Ok(groups)
    } else {
        Err(problems.join("\n"))
    }
}

/// Compares the doc's groups with the code's; the error names every offending key.
fn compare(
    doc: &BTreeMap<String, Vec<DocKey>>,
    code: &[(&str, Vec<String>)],
) -> Result<(), String> {
    let mut problems = Vec::new();
    for (group, keys) in code {
        let in_code: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
        let in_doc: BTreeSet<&str> = doc
            .get(*group)
            .map(|entries| entries.iter().map(|entry| entry.key.as_str()).collect())
            .unwrap_or_default();
        let undocumented: Vec<&str> = in_code.difference(&in_doc).copied().collect();
        let unknown: Vec<&str> = in_doc.difference(&in_code).copied().collect();
        if !undocumented.is_empty() {
            problems.push(format!(
                "{group}: in the config types but not in docs/configuration.md: {}",
                undocumented.join(", ")
            ));
        }
        if !unknown.is_empty() {
            problems.push(format!(
                "{group}: in docs/configuration.md but not in the config types: {}",
                unknown.join(", ")
            ));
        }
    }
    let code_groups: BTreeSet<&str> = code.iter().map(|(group, _)| *group).collect();
    for group in doc.keys() {
        if !code_groups.contains(group.as_str()) {
            problems.push(format!(
                "docs/configuration.md has a table marked `keys: {group}`, a group the code does not have"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[test]
fn reference_lists_exactly_the_keys_of_the_config_types() {
    let doc = parse_reference(&reference_text()).unwrap_or_else(|problems| panic!("{problems}"));
    let code = keys::reference_groups();
    if let Err(problems) = compare(&doc, &code) {
        panic!("docs/configuration.md and the config types disagree:\n{problems}");
    }
}

#[test]
fn process_settings_in_the_reference_are_the_known_keys_and_their_examples_parse() {
    let doc = parse_reference(&reference_text()).unwrap_or_else(|problems| panic!("{problems}"));
    let documented = doc.get("process").cloned().unwrap_or_default();
    let documented_keys: Vec<&str> = documented.iter().map(|entry| entry.key.as_str()).collect();
    let mut known = ProcessSettings::KNOWN_KEYS.to_vec();
    let mut sorted = documented_keys.clone();
    known.sort_unstable();
    sorted.sort_unstable();
    assert_eq!(
        sorted, known,
        "the -E table must list exactly ProcessSettings::KNOWN_KEYS"
    );
    for entry in &documented {
        let item = format!("{}={}", entry.key, entry.example);
        if let Err(err) = ProcessSettings::from_overrides([item.as_str()]) {
            panic!("the documented example `-E {item}` is refused: {err}");
        }
    }
}

#[test]
fn the_comparison_names_undocumented_and_unknown_keys() {
    let doc = "\
## Output
<!-- keys: output -->
| key | default | meaning | example |
|---|---|---|---|
| `queue.mem.events` | `65536` | events | `10` |
| `queue.mem.evnts` | `65536` | a typo | `10` |
";
    let doc = parse_reference(doc).unwrap();
    let code = vec![(
        "output",
        vec![
            "queue.mem.events".to_string(),
            "queue.mem.bytes".to_string(),
        ],
    )];
    let problems = compare(&doc, &code).unwrap_err();
    assert!(
        problems.contains("not in docs/configuration.md: queue.mem.bytes"),
        "{problems}"
    );
    assert!(
        problems.contains("not in the config types: queue.mem.evnts"),
        "{problems}"
    );
}

#[test]
fn rows_outside_a_marked_table_or_without_one_key_are_refused() {
    let doc = "\
## Somewhere
| key | default |
|---|---|
| `orphan` | none |
<!-- keys: output -->
| key | default |
|---|---|
| `type`, `path` | required |
| `type` | required |
| `type` | required |
";
    let problems = parse_reference(doc).unwrap_err();
    assert!(
        problems.contains("`orphan` is in a table without"),
        "{problems}"
    );
    assert!(
        problems.contains("`type`, `path`` is not one backticked key"),
        "{problems}"
    );
    assert!(problems.contains("`type` is listed twice"), "{problems}");
}
