//! The documentation cannot rot: the README's gateway configuration is the example file
//! the gateway's tests load, and every command the README's table names exists.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[test]
fn readme_gateway_example_is_the_checked_example_file() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let example =
        std::fs::read_to_string(common::root().join("crates/gateway/examples/gateway.toml"))
            .unwrap();
    let (_, after) = readme
        .split_once("<!-- gateway.toml -->\n```toml\n")
        .expect("README has the marked gateway example");
    let (block, _) = after.split_once("\n```").unwrap();
    assert_eq!(
        block.trim_end(),
        example.trim_end(),
        "README's gateway example differs from crates/gateway/examples/gateway.toml: copy the file into the README"
    );
}

#[test]
fn readme_audit_field_mapping_is_fields_md() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let fields = std::fs::read_to_string(common::root().join("crates/audit/FIELDS.md")).unwrap();
    let (_, after) = readme
        .split_once("<!-- audit-fields -->\n")
        .expect("README has the marked audit field mapping");
    let (block, _) = after
        .split_once("<!-- /audit-fields -->")
        .expect("the mapping's end marker");
    assert_eq!(
        block.trim_end(),
        fields.trim_end(),
        "README's audit field mapping differs from crates/audit/FIELDS.md: copy the file into the README"
    );
}

#[test]
fn every_command_in_the_readme_table_has_help() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let commands: Vec<Vec<&str>> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `intraport "))
        .filter_map(|l| l.split('`').next())
        .map(|c| {
            c.split_whitespace()
                .take_while(|w| w.chars().all(|ch| ch.is_ascii_lowercase()))
                .collect()
        })
        .collect();
    assert!(commands.len() >= 8, "{commands:?}");
    for c in commands {
        let mut args = c.clone();
        args.push("--help");
        let out = common::run(&args, None);
        assert!(
            out.status.success(),
            "intraport {} --help failed",
            c.join(" ")
        );
    }
}
