//! IAM policy documents as statements the assertions can compare.

use super::*;

#[derive(Debug)]
pub(super) struct Statement {
    pub(super) effect: String,
    pub(super) actions: Vec<String>,
    pub(super) resources: Vec<String>,
    pub(super) principal: Value,
    pub(super) condition: Value,
}

pub(super) fn string_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn statements(policy: &Value) -> Vec<Statement> {
    let list = match &policy["Statement"] {
        Value::Array(items) => items.clone(),
        one @ Value::Object(_) => vec![one.clone()],
        other => panic!("policy without statements: {other} in {policy}"),
    };
    list.iter()
        .map(|s| Statement {
            effect: s["Effect"].as_str().unwrap_or_default().to_string(),
            actions: string_list(&s["Action"]),
            resources: string_list(&s["Resource"]),
            principal: s["Principal"].clone(),
            condition: s["Condition"].clone(),
        })
        .collect()
}
