//! The configuration reference, generated from the config types themselves: a JSON Schema
//! (`docs/config.schema.json`, for editors to validate a config against) and `docs/config.md`
//! (every section and field with its type, default and the `///` doc of the field). A unit test
//! fails when the committed files differ from what the code generates; regenerate them with
//! `FERRY_UPDATE_DOCS=1 cargo test -p ferry-shared --lib config::reference`.

use std::fmt::Write as _;

use serde_json::Value;

use super::Config;

/// Where the generated files live, relative to the repository root.
pub const SCHEMA_PATH: &str = "docs/config.schema.json";
/// The generated Markdown reference.
pub const MARKDOWN_PATH: &str = "docs/config.md";

/// The JSON Schema of ferry's configuration (draft 2020-12), pretty-printed with a final newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Config);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
    text.push('\n');
    text
}

/// The Markdown reference: one section per config type, in the order they are first reached
/// from the top level.
pub fn markdown() -> String {
    let schema: Value = serde_json::from_str(&json_schema()).expect("own schema parses");
    let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
    let mut out = String::from(
        "# ferry configuration reference\n\n\
         Generated from the config types in `shared/src/config/` (their `///` docs) by\n\
         `FERRY_UPDATE_DOCS=1 cargo test -p ferry-shared --lib config::reference`; do not edit by\n\
         hand. The same content as a JSON Schema, for editors: [`config.schema.json`](config.schema.json)\n\
         (e.g. `\"$schema\": \"./docs/config.schema.json\"` is not accepted by ferry's strict parser,\n\
         so point your editor at it instead). Every object rejects unknown fields. Secrets are\n\
         never inline: see [SecretRef](#secretref). A worked example is in the README.\n",
    );
    let mut order = vec!["Config".to_string()];
    let mut i = 0;
    while i < order.len() {
        let name = order[i].clone();
        let def = if name == "Config" {
            &schema
        } else {
            &defs[&name]
        };
        for r in refs(def) {
            if !order.contains(&r) {
                order.push(r);
            }
        }
        i += 1;
    }
    for name in &order {
        let def = if name == "Config" {
            &schema
        } else {
            &defs[name]
        };
        section(&mut out, name, def);
    }
    out
}

/// Every `$ref` target inside `v`, in document order.
fn refs(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                out.push(name.to_string());
            }
            for (k, child) in map {
                if k != "$defs" {
                    out.extend(refs(child));
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|c| out.extend(refs(c))),
        _ => {}
    }
    out
}

fn anchor(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A field's type in words: `string`, `integer (uint64, >= 0)`, `[S3Endpoint](#s3endpoint)`,
/// `map of string to [SecretRef](#secretref)`, `list of string`; `or null` when optional.
fn type_of(v: &Value) -> String {
    if let Some(r) = v["$ref"].as_str() {
        let name = r.trim_start_matches("#/$defs/");
        return format!("[{name}](#{})", anchor(name));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = v[key].as_array() {
            return options.iter().map(type_of).collect::<Vec<_>>().join(" or ");
        }
    }
    if let Some(values) = v["enum"].as_array() {
        return values
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    if let Some(c) = v.get("const") {
        return format!("`{c}`");
    }
    let one = |t: &str| -> String {
        match t {
            "array" => format!("list of {}", type_of(&v["items"])),
            "object" => match v.get("additionalProperties") {
                Some(ap) if ap.is_object() => format!("map of string to {}", type_of(ap)),
                _ => "object".into(),
            },
            "integer" => match v["format"].as_str() {
                Some(f) => format!("integer ({f})"),
                None => "integer".into(),
            },
            other => other.to_string(),
        }
    };
    match &v["type"] {
        Value::String(t) => one(t),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(one)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
        .replace("\n\n", "<br><br>")
        .replace('\n', " ")
}

fn section(out: &mut String, name: &str, def: &Value) {
    let title = if name == "Config" {
        "Config (the top level)"
    } else {
        name
    };
    let _ = write!(out, "\n## {title}\n\n");
    if let Some(d) = def["description"].as_str() {
        let _ = write!(out, "{d}\n\n");
    }
    if let Some(props) = def["properties"].as_object() {
        fields(out, def, props);
    }
    for key in ["oneOf", "anyOf"] {
        for variant in def[key].as_array().into_iter().flatten() {
            variant_block(out, variant);
        }
    }
    if def["properties"].is_null()
        && def["oneOf"].is_null()
        && def["anyOf"].is_null()
        && def["enum"].is_array()
    {
        let _ = writeln!(out, "One of: {}.", type_of(def));
    }
}

fn variant_block(out: &mut String, variant: &Value) {
    let props = variant["properties"].as_object();
    // Internally tagged (`"type": "sftp"`): the tag's const names the variant.
    let tag = props.and_then(|p| {
        p.iter()
            .find_map(|(k, v)| v.get("const").map(|c| format!("`{k}: {c}`")))
    });
    let external = props.and_then(|p| {
        (p.len() == 1 && variant["required"].as_array().is_some_and(|r| r.len() == 1))
            .then(|| p.keys().next().cloned())
            .flatten()
    });
    let label = match (tag, &external, variant["const"].as_str()) {
        (Some(t), _, _) => t,
        (None, Some(k), _) => format!("`{{\"{k}\": …}}`"),
        (None, None, Some(c)) => format!("`\"{c}\"`"),
        _ => type_of(variant),
    };
    let _ = write!(out, "\n### {label}\n\n");
    if let Some(d) = variant["description"].as_str() {
        let _ = write!(out, "{d}\n\n");
    }
    if let Some(p) = props {
        if let Some(k) = external {
            let inner = &p[&k];
            if inner["properties"].is_object() {
                fields(out, inner, inner["properties"].as_object().unwrap());
            } else {
                let _ = writeln!(out, "Value: {}.", type_of(inner));
            }
        } else {
            fields(out, variant, p);
        }
    }
}

fn fields(out: &mut String, def: &Value, props: &serde_json::Map<String, Value>) {
    let required: Vec<&str> = def["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    out.push_str("| field | type | required / default | description |\n|---|---|---|---|\n");
    for (field, v) in props {
        let need = if required.contains(&field.as_str()) {
            "required".to_string()
        } else {
            match v.get("default") {
                Some(Value::Null) | None => "optional".to_string(),
                Some(d) => format!("default `{d}`"),
            }
        };
        let description = match (v["description"].as_str(), v.get("const")) {
            (Some(d), _) => d.to_string(),
            (None, Some(c)) => format!("Selects this kind: always {c} here."),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "| `{field}` | {} | {need} | {} |",
            cell(&type_of(v)),
            cell(&description)
        );
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(rel: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(rel)
    }

    #[test]
    fn committed_reference_is_current() {
        let generated = [(SCHEMA_PATH, json_schema()), (MARKDOWN_PATH, markdown())];
        if std::env::var_os("FERRY_UPDATE_DOCS").is_some() {
            for (path, text) in &generated {
                std::fs::write(repo_file(path), text).unwrap();
            }
        }
        for (path, text) in generated {
            let committed = std::fs::read_to_string(repo_file(path)).unwrap_or_default();
            assert!(
                committed == text,
                "{path} is not what the config types generate: run \
                 `FERRY_UPDATE_DOCS=1 cargo test -p ferry-shared --lib config::reference` and commit it"
            );
        }
    }

    #[test]
    fn reference_covers_every_field_with_its_doc() {
        let md = markdown();
        // Settings a local user needs that used to live only in code and tests.
        for needle in [
            "`stop_when_idle`",
            "UseDevelopmentEmulator=true",
            "`authority_url`",
            "`lookback_hours`",
            "`lock_duration_secs`",
            "`retry_budget_secs`",
            "\"secrets_manager\"",
        ] {
            assert!(md.contains(needle), "{needle} missing from the reference");
        }
        // No field without a description.
        let undocumented: Vec<&str> = md
            .lines()
            .filter(|l| l.starts_with("| `") && l.ends_with("|  |"))
            .collect();
        assert!(undocumented.is_empty(), "undocumented: {undocumented:#?}");
    }
}
