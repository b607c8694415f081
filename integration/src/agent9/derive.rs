//! Today's agent's component model, derived from a policy: which `agent-shipper`
//! components run, their ids, and each unit's config. Pure, so the rules are testable.
//!
//! The rules (docs/elastic-agent.md, PROTOCOL.md "Today's agents"): the inputs of our type
//! that are enabled are grouped by the output they name in `use_output` (default
//! `default`); each group is a component `<input type>-<output name>` with one OUTPUT unit
//! (id = the component id; config = the output block minus `enabled` and `log_level`, plus
//! the enrollment `headers` for Elasticsearch) and one INPUT unit per input (id `<component
//! id>-<policy input id>`; config = the input block minus `enabled`, `use_output` and
//! `log_level`, plus `policy.revision`). An input without `id` takes its type as id.

use crate::agent::UnitSpec;
use agent_shipper::proto::agent::{UnitLogLevel, UnitType};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// One agent policy: what Fleet (or `elastic-agent.yml`) says.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The policy revision (`policy.revision` in every INPUT unit's config).
    #[serde(default)]
    pub revision: u64,
    /// Output blocks by name.
    #[serde(default)]
    pub outputs: BTreeMap<String, Value>,
    /// Input blocks, as written (`id`, `type`, `use_output`, …).
    #[serde(default)]
    pub inputs: Vec<Value>,
}

/// One component of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentModel {
    /// `<input type>-<output name>`.
    pub id: String,
    /// The output's name in the policy.
    pub output: String,
    /// Its units: the OUTPUT unit first, then one INPUT unit per input, in policy order.
    pub units: Vec<UnitSpec>,
}

/// A policy the agent would not run as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeriveError {
    /// An input names an output the policy does not have.
    #[error("input `{input}` uses output `{output}`, which the policy does not define")]
    MissingOutput {
        /// The policy input id.
        input: String,
        /// The output it names.
        output: String,
    },
    /// An input's output is of a type the spec does not list.
    #[error("input `{input}`: output `{output}` is of type `{kind}`, which the `{input_type}` spec does not support")]
    UnsupportedOutput {
        /// The policy input id.
        input: String,
        /// The output's name.
        output: String,
        /// Its type.
        kind: String,
        /// Our input type.
        input_type: String,
    },
    /// Two inputs share an id.
    #[error("two inputs have the id `{0}`")]
    DuplicateId(String),
    /// An input or output block is not a map.
    #[error("{0} is not a map")]
    NotAMap(String),
}

/// The components the agent runs for `policy`'s inputs of `input_type`, sorted by id.
/// `supported_outputs` are the spec's `outputs`; `headers` the enrollment headers.
pub fn derive_components(
    policy: &Policy,
    input_type: &str,
    supported_outputs: &[String],
    headers: &BTreeMap<String, String>,
) -> Result<Vec<ComponentModel>, DeriveError> {
    let mut components: BTreeMap<String, ComponentModel> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (index, input) in policy.inputs.iter().enumerate() {
        let Value::Object(block) = input else {
            return Err(DeriveError::NotAMap(format!("inputs.{index}")));
        };
        if block.get("type").and_then(Value::as_str) != Some(input_type) {
            continue;
        }
        if block.get("enabled").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let input_id = block
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(input_type)
            .to_string();
        if !ids.insert(input_id.clone()) {
            return Err(DeriveError::DuplicateId(input_id));
        }
        let output_name = block
            .get("use_output")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let Some(output) = policy.outputs.get(&output_name) else {
            return Err(DeriveError::MissingOutput {
                input: input_id,
                output: output_name,
            });
        };
        let Value::Object(output) = output else {
            return Err(DeriveError::NotAMap(format!("outputs.{output_name}")));
        };
        if output.get("enabled").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let kind = output
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !supported_outputs.contains(&kind) {
            return Err(DeriveError::UnsupportedOutput {
                input: input_id,
                output: output_name,
                kind,
                input_type: input_type.into(),
            });
        }
        let component_id = format!("{input_type}-{output_name}");
        let component = components
            .entry(component_id.clone())
            .or_insert_with(|| ComponentModel {
                id: component_id.clone(),
                output: output_name.clone(),
                units: vec![UnitSpec {
                    id: component_id.clone(),
                    kind: UnitType::Output,
                    config: output_config(output, &kind, headers),
                    log_level: log_level(output),
                }],
            });
        component.units.push(UnitSpec {
            id: format!("{component_id}-{input_id}"),
            kind: UnitType::Input,
            config: input_config(block, policy.revision),
            log_level: log_level(block),
        });
    }
    Ok(components.into_values().collect())
}

/// The INPUT unit's config: the block minus `enabled`, `use_output`, `log_level`, plus
/// `policy.revision`.
fn input_config(block: &Map<String, Value>, revision: u64) -> Value {
    let mut config = block.clone();
    for key in ["enabled", "use_output", "log_level"] {
        config.remove(key);
    }
    let policy = config
        .entry("policy")
        .or_insert_with(|| Value::Object(Map::new()));
    match policy {
        Value::Object(policy) => {
            policy.insert("revision".into(), revision.into());
        }
        other => *other = serde_json::json!({"revision": revision}),
    }
    Value::Object(config)
}

/// The OUTPUT unit's config: the block minus `enabled`, `log_level`, plus the enrollment
/// headers for Elasticsearch.
fn output_config(
    block: &Map<String, Value>,
    kind: &str,
    headers: &BTreeMap<String, String>,
) -> Value {
    let mut config = block.clone();
    for key in ["enabled", "log_level"] {
        config.remove(key);
    }
    if kind == "elasticsearch" && !headers.is_empty() {
        let entry = config
            .entry("headers")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(map) = entry {
            for (name, value) in headers {
                map.insert(name.clone(), value.clone().into());
            }
        }
    }
    Value::Object(config)
}

/// A block's `log_level` as the unit's level (INFO when absent or unknown).
fn log_level(block: &Map<String, Value>) -> UnitLogLevel {
    match block.get("log_level").and_then(Value::as_str) {
        Some("error") => UnitLogLevel::Error,
        Some("warning") | Some("warn") => UnitLogLevel::Warn,
        Some("debug") => UnitLogLevel::Debug,
        Some("trace") => UnitLogLevel::Trace,
        _ => UnitLogLevel::Info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn es() -> Vec<String> {
        vec!["elasticsearch".to_string()]
    }

    fn policy(revision: u64, inputs: Vec<Value>) -> Policy {
        Policy {
            revision,
            outputs: BTreeMap::from([
                (
                    "default".to_string(),
                    json!({"type": "elasticsearch", "hosts": ["http://a:9200"], "api_key": "k1:s1", "enabled": true, "log_level": "debug", "preset": "balanced"}),
                ),
                (
                    "archive".to_string(),
                    json!({"type": "elasticsearch", "hosts": ["http://b:9200"], "api_key": "k2:s2"}),
                ),
                (
                    "logstash".to_string(),
                    json!({"type": "logstash", "hosts": ["l:5044"]}),
                ),
            ]),
            inputs,
        }
    }

    fn app(id: &str, output: &str) -> Value {
        json!({"id": id, "type": "agent-shipper", "use_output": output, "enabled": true, "log_level": "debug",
               "server": format!("unix:///run/{id}.sock"), "data_stream": {"namespace": "default"}})
    }

    #[test]
    fn ids_and_unit_configs_are_the_agents() {
        let headers = BTreeMap::from([("X-Tenant".to_string(), "t1".to_string())]);
        let model = derive_components(
            &policy(
                7,
                vec![
                    app("app", "default"),
                    app("audit", "default"),
                    json!({"id": "logs", "type": "filestream"}),
                ],
            ),
            "agent-shipper",
            &es(),
            &headers,
        )
        .unwrap();
        assert_eq!(model.len(), 1, "other input types are other components");
        let component = &model[0];
        assert_eq!(component.id, "agent-shipper-default");
        let ids: Vec<(&str, UnitType)> = component
            .units
            .iter()
            .map(|u| (u.id.as_str(), u.kind))
            .collect();
        assert_eq!(
            ids,
            [
                ("agent-shipper-default", UnitType::Output),
                ("agent-shipper-default-app", UnitType::Input),
                ("agent-shipper-default-audit", UnitType::Input),
            ]
        );
        assert_eq!(
            component.units[0].config,
            json!({"type": "elasticsearch", "hosts": ["http://a:9200"], "api_key": "k1:s1", "preset": "balanced", "headers": {"X-Tenant": "t1"}})
        );
        assert_eq!(component.units[0].log_level, UnitLogLevel::Debug);
        assert_eq!(
            component.units[1].config,
            json!({"id": "app", "type": "agent-shipper", "server": "unix:///run/app.sock",
                   "data_stream": {"namespace": "default"}, "policy": {"revision": 7}})
        );
        assert_eq!(component.units[1].log_level, UnitLogLevel::Debug);
    }

    #[test]
    fn a_revision_changes_only_policy_revision_in_input_configs() {
        let before = derive_components(
            &policy(7, vec![app("app", "default")]),
            "agent-shipper",
            &es(),
            &BTreeMap::new(),
        )
        .unwrap();
        let after = derive_components(
            &policy(8, vec![app("app", "default")]),
            "agent-shipper",
            &es(),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(
            before[0].units[0], after[0].units[0],
            "the OUTPUT unit is the same"
        );
        let mut input = before[0].units[1].config.clone();
        input["policy"]["revision"] = json!(8);
        assert_eq!(after[0].units[1].config, input);
    }

    #[test]
    fn use_output_picks_the_component_and_disabled_inputs_are_left_out() {
        let mut off = app("off", "default");
        off["enabled"] = json!(false);
        let model = derive_components(
            &policy(
                1,
                vec![
                    app("app", "archive"),
                    json!({"id": "plain", "type": "agent-shipper", "server": "/s"}),
                    off,
                ],
            ),
            "agent-shipper",
            &es(),
            &BTreeMap::new(),
        )
        .unwrap();
        let ids: Vec<&str> = model.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["agent-shipper-archive", "agent-shipper-default"]);
        assert_eq!(model[0].units[1].id, "agent-shipper-archive-app");
        assert_eq!(
            model[1].units[1].id, "agent-shipper-default-plain",
            "no use_output: `default`"
        );
        assert_eq!(model[1].units.len(), 2, "the disabled input is not a unit");
        // No input of our type left: no component at all.
        assert!(
            derive_components(&policy(2, vec![]), "agent-shipper", &es(), &BTreeMap::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_input_without_id_takes_its_type_and_policy_errors_are_named() {
        let model = derive_components(
            &policy(1, vec![json!({"type": "agent-shipper", "server": "/s"})]),
            "agent-shipper",
            &es(),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(model[0].units[1].id, "agent-shipper-default-agent-shipper");
        assert!(
            model[0].units[1].config.get("id").is_none(),
            "the block is passed as written"
        );
        let err = derive_components(
            &policy(1, vec![app("a", "nowhere")]),
            "agent-shipper",
            &es(),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(matches!(err, DeriveError::MissingOutput { .. }), "{err}");
        let err = derive_components(
            &policy(1, vec![app("a", "logstash")]),
            "agent-shipper",
            &es(),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(
            matches!(err, DeriveError::UnsupportedOutput { .. }),
            "{err}"
        );
        let err = derive_components(
            &policy(1, vec![app("a", "default"), app("a", "archive")]),
            "agent-shipper",
            &es(),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(err, DeriveError::DuplicateId("a".into()));
    }
}
