//! Converts between the control protocol's messages and the supervisor's typed units.

use crate::proto::agent::{self, UnitExpected, UnitObserved};
use crate::supervisor::{ExpectedUnit, LogLevel, ObservedUnit, UnitConfig, UnitKey, UnitKind};
use prost_types::value::Kind;
use serde_json::Value as Json;

/// `google.protobuf.Struct` → JSON object.
pub fn struct_to_json(value: &prost_types::Struct) -> Json {
    Json::Object(
        value
            .fields
            .iter()
            .map(|(key, value)| (key.clone(), value_to_json(value)))
            .collect(),
    )
}

fn value_to_json(value: &prost_types::Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::NumberValue(n)) => {
            // Struct numbers are doubles; give integers back as integers so that
            // `events: 10` reaches a u64 setting intact.
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                Json::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map(Json::Number)
                    .unwrap_or(Json::Null)
            }
        }
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(list)) => Json::Array(list.values.iter().map(value_to_json).collect()),
    }
}

/// JSON object → `google.protobuf.Struct` (non-objects give an empty Struct).
pub fn json_to_struct(value: &Json) -> prost_types::Struct {
    let fields = match value {
        Json::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
        _ => Default::default(),
    };
    prost_types::Struct { fields }
}

fn json_to_value(value: &Json) -> prost_types::Value {
    let kind = match value {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(_) => Kind::StructValue(json_to_struct(value)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn unit_kind(raw: i32) -> UnitKind {
    match agent::UnitType::try_from(raw) {
        Ok(agent::UnitType::Output) => UnitKind::Output,
        _ => UnitKind::Input,
    }
}

fn log_level(raw: i32) -> LogLevel {
    match agent::UnitLogLevel::try_from(raw) {
        Ok(agent::UnitLogLevel::Error) => LogLevel::Error,
        Ok(agent::UnitLogLevel::Warn) => LogLevel::Warn,
        Ok(agent::UnitLogLevel::Debug) => LogLevel::Debug,
        Ok(agent::UnitLogLevel::Trace) => LogLevel::Trace,
        _ => LogLevel::Info,
    }
}

/// One expected unit as the supervisor sees it.
pub fn expected_unit(unit: &UnitExpected) -> ExpectedUnit {
    ExpectedUnit {
        key: UnitKey {
            id: unit.id.clone(),
            kind: unit_kind(unit.r#type),
        },
        stopped: unit.state == agent::State::Stopped as i32,
        config_idx: unit.config_state_idx,
        config: unit.config.as_ref().map(|config| UnitConfig {
            source: config
                .source
                .as_ref()
                .map(struct_to_json)
                .unwrap_or_else(|| Json::Object(Default::default())),
            revision: config.revision,
        }),
        log_level: log_level(unit.log_level),
    }
}

/// One observed unit as the agent expects it.
pub fn observed_unit(unit: &ObservedUnit) -> UnitObserved {
    UnitObserved {
        id: unit.key.id.clone(),
        r#type: match unit.key.kind {
            UnitKind::Input => agent::UnitType::Input as i32,
            UnitKind::Output => agent::UnitType::Output as i32,
        },
        config_state_idx: unit.config_idx,
        state: unit.state as i32,
        message: unit.message.clone(),
        payload: unit.payload.as_ref().map(json_to_struct),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn struct_round_trip_keeps_integers_integers() {
        let value = json!({"type": "file", "queue": {"mem": {"events": 10}}, "ratio": 0.5, "hosts": ["a", null, true]});
        assert_eq!(struct_to_json(&json_to_struct(&value)), value);
    }

    #[test]
    fn expected_stopped_unit_is_flagged() {
        let unit = UnitExpected {
            id: "out".into(),
            r#type: agent::UnitType::Output as i32,
            state: agent::State::Stopped as i32,
            config_state_idx: 4,
            log_level: agent::UnitLogLevel::Debug as i32,
            ..UnitExpected::default()
        };
        let expected = expected_unit(&unit);
        assert!(expected.stopped);
        assert_eq!(expected.key.kind, UnitKind::Output);
        assert_eq!(expected.log_level, LogLevel::Debug);
        assert!(expected.config.is_none());
    }
}
