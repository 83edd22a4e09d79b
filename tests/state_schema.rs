//! `schema/state.schema.json` describes the documents standby really writes.

mod state_support;

use serde_json::{Value, json};
use standby::state::{Backend, LocalBackend};
use state_support::{fixture, sample_doc};

fn validator() -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/state.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc).map(|e| e.to_string()).collect()
}

#[test]
fn written_documents_match_the_schema() {
    let v = validator();
    // The bytes of a real write, not just the in-memory value.
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path());
    let lock = backend.lock("standby test").unwrap();
    let mut doc = sample_doc();
    backend.write(&lock, &mut doc).unwrap();
    let written: Value =
        serde_json::from_slice(&std::fs::read(backend.state_path()).unwrap()).unwrap();
    assert!(
        written["objects"]
            .as_object()
            .unwrap()
            .contains_key("machine.web[\"a\"]")
    );
    assert!(
        written["objects"]
            .as_object()
            .unwrap()
            .contains_key("protection.web[\"a b\"]")
    );
    assert_eq!(written["drills"].as_array().unwrap().len(), 2);
    assert_eq!(written["runs"].as_array().unwrap().len(), 1);
    assert_eq!(errors(&v, &written), Vec::<String>::new());

    let fixture: Value =
        serde_json::from_slice(&std::fs::read(fixture("valid.json")).unwrap()).unwrap();
    assert_eq!(errors(&v, &fixture), Vec::<String>::new());

    let empty = serde_json::to_value(standby::state::StateDoc::new()).unwrap();
    assert_eq!(errors(&v, &empty), Vec::<String>::new());
}

#[test]
fn invalid_documents_fail_the_schema() {
    let v = validator();
    let good = serde_json::to_value(sample_doc()).unwrap();
    assert!(v.is_valid(&good));
    let bad = |f: &dyn Fn(&mut Value)| {
        let mut d = good.clone();
        f(&mut d);
        d
    };
    let cases: Vec<(&str, Value)> = vec![
        ("empty object", json!({})),
        ("format 99", bad(&|d| d["format_version"] = json!(99))),
        ("serial text", bad(&|d| d["serial"] = json!("seven"))),
        ("unknown field", bad(&|d| d["owner"] = json!("me"))),
        (
            "bad address key",
            bad(&|d| d["objects"]["disk.db"] = d["objects"]["machine.db"].clone()),
        ),
        (
            "unquoted key",
            bad(&|d| d["objects"]["machine.web[a]"] = d["objects"]["machine.db"].clone()),
        ),
        (
            "bad status",
            bad(&|d| d["objects"]["machine.db"]["status"] = json!("great")),
        ),
        (
            "bad time",
            bad(&|d| d["objects"]["machine.db"]["updated_at"] = json!("yesterday")),
        ),
        (
            "bad drill",
            bad(&|d| d["drills"][0]["passed"] = json!("yes")),
        ),
        ("bad lineage", bad(&|d| d["lineage"] = json!("not-a-uuid"))),
        (
            "bad run kind",
            bad(&|d| d["runs"][0]["kind"] = json!("sideways")),
        ),
        (
            "bad run phase",
            bad(&|d| d["runs"][0]["phase"] = json!("half")),
        ),
    ];
    for (name, doc) in cases {
        assert!(!v.is_valid(&doc), "{name}: the schema accepted it");
        // The schema and the reader agree: the reader refuses it too.
        let text = serde_json::to_vec(&doc).unwrap();
        assert!(
            standby::state::parse_document(std::path::Path::new("state.json"), &text).is_err(),
            "{name}: the reader accepted it"
        );
    }
}
